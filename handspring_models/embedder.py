"""A loaded feature: the model towers it needs, their tokenizer/preprocessing, and one interface.

The interface is split in two so a server can batch across requests:
``prepare(modality, item)`` turns one raw input into a model-ready tensor (decoding, resizing,
tokenizing; safe to run in worker threads), ``encode(modality, prepared)`` runs one forward
pass over a list of prepared inputs. ``embed_images``/``embed_texts`` chain the two.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from . import precision as precision_modes
from .clip import CLIP, CLIPConfig
from .kernels import pack_linear_weights
from .preprocess import DEFAULT_MAX_PIXELS, InvalidInputError, decode_image, preprocess_image
from .tokenizer import Tokenizer
from .weights import WeightsError, load_component, manifest_sha256, read_config


class MissingModalityError(ValueError):
    """The loaded feature has no tower for the requested modality."""


# feature -> (model, modalities it serves)
FEATURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "clip_vit_b_32": ("clip_vit_b_32", ("text", "image")),
    "clip_vit_b_32_text": ("clip_vit_b_32", ("text",)),
    "clip_vit_b_32_image": ("clip_vit_b_32", ("image",)),
}


class CLIPEmbedder:
    def __init__(self, feature: str, folder: Path, precision: str = "fp32", max_pixels: int = DEFAULT_MAX_PIXELS):
        self.feature = feature
        self.model_name, self.modalities = FEATURES[feature]
        self.weights_dir = folder
        self.requested_precision = precision
        self.precision = precision_modes.resolve(precision)
        self.max_pixels = max_pixels
        self.dtype = precision_modes.DTYPES[self.precision]
        # JPEG draft decoding is an approximation: only the fast modes use it, never below 2x the input size.
        self.draft_size = None if self.precision == "fp32" else 2 * 224

        meta = read_config(folder)
        if meta.get("model") != self.model_name:
            raise WeightsError(f"{folder / 'config.json'} holds {meta.get('model')!r}, not {self.model_name!r}")
        self.config = CLIPConfig.from_dict(meta["architecture"])
        self.license = meta.get("license")
        self.source = meta.get("source")  # where the weights came from ("random ..." for demo weights)
        self.dim = self.config.embed_dim
        self.image_size = self.config.vision.image_size
        self.manifest_sha256 = manifest_sha256(folder)

        # The tokenizer (pure Python) builds in a thread while the weights load (native code that
        # releases the GIL): ~0.2 s off start-up.
        tokenizer = None
        if "text" in self.modalities:
            pool = ThreadPoolExecutor(1, thread_name_prefix="handspring-tokenizer")
            tokenizer = pool.submit(self._load_tokenizer, folder / meta.get("tokenizer", "merges.txt"))
            pool.shutdown(wait=False)  # the submitted build still runs; result() below waits for it
        with torch.device("meta"):  # no memory for weights about to be replaced
            model = CLIP(self.config, with_vision="image" in self.modalities, with_text="text" in self.modalities)
        state: dict[str, torch.Tensor] = {}
        for modality in self.modalities:
            filename = meta["components"].get(modality)
            if filename is None:
                raise WeightsError(f"{folder / 'config.json'} lists no {modality} component")
            state.update(load_component(folder, filename, self.dtype))
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            raise WeightsError(f"weights in {folder} do not fit the {self.model_name} architecture: {e}") from None
        del state  # the model holds the only reference now, so packing frees each dense weight as it goes
        self.model = model.eval().requires_grad_(False)
        self.packed_weights = pack_linear_weights(self.model)
        self.tokenizer = tokenizer.result() if tokenizer is not None else None

    def _load_tokenizer(self, path: Path) -> Tokenizer:
        if not path.is_file():
            raise WeightsError(f"{path} is missing")
        try:
            return Tokenizer.from_file(path, self.config.text.context_length)
        except (ValueError, UnicodeDecodeError) as e:
            raise WeightsError(f"{path} is corrupt: {e}") from None

    # ------------------------------------------------------------ two-step interface

    def require(self, modality: str) -> None:
        if modality not in self.modalities:
            wanted = f"{self.model_name}_{modality}" if modality in ("text", "image") else None
            hint = f"; load {self.model_name} or {wanted}" if wanted else ""
            raise MissingModalityError(
                f"feature {self.feature} does not embed {modality} (it has: {', '.join(self.modalities)}){hint}"
            )

    def prepare(self, modality: str, item) -> torch.Tensor:
        """One raw input -> model input: image bytes/PIL -> [3, S, S] float; text -> [n] token ids."""
        self.require(modality)
        if modality == "text":
            if not isinstance(item, str):
                raise InvalidInputError(f"a text must be a string, not {type(item).__name__}")
            ids = self.tokenizer(item)
            # The reference pools at the FIRST end-of-text token (argmax), which a typed "<|endoftext|>"
            # can bring forward; under the causal mask nothing after it matters, so drop the rest.
            ids = ids[: ids.index(self.tokenizer.eot_id) + 1]
            return torch.tensor(ids, dtype=torch.long)
        if isinstance(item, (bytes, bytearray, memoryview)):
            item = decode_image(bytes(item), self.max_pixels, self.draft_size)
        elif not isinstance(item, Image.Image):
            raise InvalidInputError(f"an image must be encoded bytes or a PIL image, not {type(item).__name__}")
        return preprocess_image(item, self.image_size)

    @torch.inference_mode()
    def encode(self, modality: str, prepared: Sequence[torch.Tensor]) -> np.ndarray:
        """One forward pass over prepared inputs -> unit vectors [n, dim], float32."""
        self.require(modality)
        if len(prepared) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if modality == "image":
            pixels = torch.stack(list(prepared)).to(self.dtype)
            out = self.model.encode_image(pixels)
        else:
            # Pad only to the longest text in the batch (see CLIP.encode_text); pad id 0 as OpenAI does.
            lengths = torch.tensor([len(t) for t in prepared])
            tokens = torch.zeros(len(prepared), int(lengths.max()), dtype=torch.long)
            for row, ids in enumerate(prepared):
                tokens[row, : len(ids)] = ids
            out = self.model.encode_text(tokens, lengths - 1)
        return out.numpy().astype(np.float32, copy=False)

    def warmup(self) -> None:
        """Run each tower once on dummy input: the first oneDNN call of a shape family is slow
        (kernel selection), and it should not land on a client's request."""
        for modality in self.modalities:
            if modality == "image":
                self.encode("image", [torch.zeros(3, self.image_size, self.image_size)])
            else:
                self.encode("text", [self.prepare("text", "warm up")])

    # ------------------------------------------------------------ convenience

    def embed(self, modality: str, items: Sequence) -> np.ndarray:
        return self.encode(modality, [self.prepare(modality, item) for item in items])

    def embed_images(self, images: Sequence) -> np.ndarray:
        """PIL images or encoded image bytes -> [n, dim] float32 unit vectors."""
        return self.embed("image", images)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> [n, dim] float32 unit vectors."""
        return self.embed("text", texts)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.feature} {self.precision} from {self.weights_dir}>"
