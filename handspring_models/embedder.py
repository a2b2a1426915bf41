"""A loaded feature: the model towers it needs, their tokenizer/preprocessing, and one interface.

The interface is split in two so a server can batch across requests:
``prepare(modality, item)`` turns one raw input into a model-ready tensor (decoding, resizing,
tokenizing; safe to run in worker threads), ``encode(modality, prepared)`` runs one forward
pass over a list of prepared inputs. ``embed_images``/``embed_texts`` chain the two.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from . import precision as precision_modes
from .clip import CLIP, CLIPConfig
from .kernels import pack_linear_weights
from .preprocess import (DEFAULT_MAX_PIXELS, InvalidInputError, decode_image, preprocess_image,
                         warn_if_pillow_limits)
from .tokenizer import Tokenizer
from .weights import WeightsError, load_component, manifest_sha256, read_config


class MissingModalityError(ValueError):
    """The loaded feature has no tower for the requested modality."""


# feature -> (model, modalities it serves)
FEATURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "clip_vit_b_32": ("clip_vit_b_32", ("text", "image")),
    "clip_vit_b_32_text": ("clip_vit_b_32", ("text",)),
    "clip_vit_b_32_image": ("clip_vit_b_32", ("image",)),
    "imagebind_huge": ("imagebind_huge", ("text", "image", "audio", "video", "depth", "thermal", "imu")),
    **{f"imagebind_huge_{m}": ("imagebind_huge", (m,))
       for m in ("text", "image", "audio", "video", "depth", "thermal", "imu")},
}


class Embedder:
    """What every model shares: the weights folder, precision, the tokenizer, loading only the
    components (weight files) the feature's modalities need, and the convenience methods.
    Subclasses say how to build the model and implement ``prepare``/``encode``/``warmup``."""

    def __init__(self, feature: str, folder: Path, precision: str = "fp32", max_pixels: int = DEFAULT_MAX_PIXELS):
        self.feature = feature
        self.model_name, self.modalities = FEATURES[feature]
        self.weights_dir = folder
        self.requested_precision = precision
        self.precision = precision_modes.resolve(precision)
        self.max_pixels = max_pixels
        if {"image", "depth", "thermal"} & set(self.modalities):
            warn_if_pillow_limits(max_pixels)
        self.dtype = precision_modes.DTYPES[self.precision]
        # JPEG draft decoding is an approximation: only the fast modes use it, never below 2x the input size.
        self.draft_size = None if self.precision == "fp32" else 2 * 224

        meta = read_config(folder)
        if meta.get("model") != self.model_name:
            raise WeightsError(f"{folder / 'config.json'} holds {meta.get('model')!r}, not {self.model_name!r}")
        self.license = meta.get("license")
        self.source = meta.get("source")  # where the weights came from ("random ..." for demo weights)
        self.manifest_sha256 = manifest_sha256(folder)
        self._read_architecture(meta["architecture"])

        # The tokenizer (pure Python) builds in a thread while the weights load (native code that
        # releases the GIL): ~0.2 s off start-up.
        tokenizer = None
        if "text" in self.modalities:
            pool = ThreadPoolExecutor(1, thread_name_prefix="handspring-tokenizer")
            tokenizer = pool.submit(self._load_tokenizer, folder / meta.get("tokenizer", "merges.txt"))
            pool.shutdown(wait=False)  # the submitted build still runs; result() below waits for it
        with torch.device("meta"):  # no memory for weights about to be replaced
            model = self._build_model()
        state: dict[str, torch.Tensor] = {}
        for component in self._components():
            filename = meta["components"].get(component)
            if filename is None:
                raise WeightsError(f"{folder / 'config.json'} lists no {component} component")
            state.update(load_component(folder, filename, self.dtype, mapped=self.LOOKUP_TABLES.get(component, ())))
        self._adjust_state(state)
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            raise WeightsError(f"weights in {folder} do not fit the {self.model_name} architecture: {e}") from None
        del state  # the model holds the only reference now, so packing frees each dense weight as it goes
        self.model = model.eval().requires_grad_(False)
        self.packed_weights = pack_linear_weights(self.model)
        self.tokenizer = tokenizer.result() if tokenizer is not None else None

    # --- what a model says about itself
    context_length = 77
    # Per component, the tables the model only looks rows up in (token embeddings): left on the
    # file, memory-mapped, so only the rows texts use become resident, and cast per lookup.
    LOOKUP_TABLES: dict[str, tuple[str, ...]] = {}

    def _read_architecture(self, architecture: dict) -> None:
        raise NotImplementedError

    def _build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def _components(self) -> list[str]:
        """The weight files (by component name) this feature's modalities need."""
        return list(self.modalities)

    def _adjust_state(self, state: dict[str, torch.Tensor]) -> None:
        """A last look at the loaded tensors before they go into the model."""

    def _load_tokenizer(self, path: Path) -> Tokenizer:
        if not path.is_file():
            raise WeightsError(f"{path} is missing")
        try:
            return Tokenizer.from_file(path, self.context_length)
        except (ValueError, UnicodeDecodeError) as e:
            raise WeightsError(f"{path} is corrupt: {e}") from None

    # ------------------------------------------------------------ two-step interface

    def require(self, modality: str) -> None:
        if modality not in self.modalities:
            wanted = f"{self.model_name}_{modality}" if f"{self.model_name}_{modality}" in FEATURES else None
            hint = f"; load {self.model_name} or {wanted}" if wanted else ""
            raise MissingModalityError(
                f"feature {self.feature} does not embed {modality} (it has: {', '.join(self.modalities)}){hint}"
            )

    def prepared_nbytes(self, modality: str) -> int:
        """The most memory one prepared input of ``modality`` holds (what ``prepare`` returns):
        a server reserves this much before it decodes one."""
        self.require(modality)
        if modality == "text":
            return self.context_length * torch.tensor([], dtype=torch.long).element_size()
        return math.prod(self._prepared_shape(modality)) * torch.tensor([], dtype=torch.float32).element_size()

    def _prepared_shape(self, modality: str) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    def _text_ids(self, item) -> torch.Tensor:
        if not isinstance(item, str):
            raise InvalidInputError(f"a text must be a string, not {type(item).__name__}")
        ids = self.tokenizer(item)
        # The reference pools at the FIRST end-of-text token (argmax), which a typed "<|endoftext|>"
        # can bring forward; under the causal mask nothing after it matters, so drop the rest.
        ids = ids[: ids.index(self.tokenizer.eot_id) + 1]
        return torch.tensor(ids, dtype=torch.long)

    def _image_pixels(self, item) -> torch.Tensor:
        if isinstance(item, (bytes, bytearray, memoryview)):
            item = decode_image(bytes(item), self.max_pixels, self.draft_size)
        elif not isinstance(item, Image.Image):
            raise InvalidInputError(f"an image must be encoded bytes or a PIL image, not {type(item).__name__}")
        return preprocess_image(item, self.image_size)

    def _pad_texts(self, prepared: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-id rows -> [b, width] (pad id 0, as OpenAI does) and each row's end-of-text index.
        ``width`` is the longest text of the batch (see the models' ``encode_text``) rounded up to
        an even count: half as many matrix shapes for oneDNN to build and cache, for one padding
        position at most, which the causal mask keeps out of every real token."""
        lengths = torch.tensor([len(t) for t in prepared])
        width = min(int(lengths.max()) + int(lengths.max()) % 2, self.context_length)
        tokens = torch.zeros(len(prepared), width, dtype=torch.long)
        for row, ids in enumerate(prepared):
            tokens[row, : len(ids)] = ids
        return tokens, lengths - 1

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


class CLIPEmbedder(Embedder):
    LOOKUP_TABLES = {"text": ("token_embedding.weight",)}

    def _read_architecture(self, architecture: dict) -> None:
        self.config = CLIPConfig.from_dict(architecture)
        self.dim = self.config.embed_dim
        self.image_size = self.config.vision.image_size
        self.context_length = self.config.text.context_length

    def _build_model(self) -> torch.nn.Module:
        return CLIP(self.config, with_vision="image" in self.modalities, with_text="text" in self.modalities)

    def prepare(self, modality: str, item) -> torch.Tensor:
        """One raw input -> model input: image bytes/PIL -> [3, S, S] float; text -> [n] token ids."""
        self.require(modality)
        return self._text_ids(item) if modality == "text" else self._image_pixels(item)

    @torch.inference_mode()
    def encode(self, modality: str, prepared: Sequence[torch.Tensor]) -> np.ndarray:
        """One forward pass over prepared inputs -> unit vectors [n, dim], float32."""
        self.require(modality)
        if len(prepared) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if modality == "image":
            out = self.model.encode_image(torch.stack(list(prepared)).to(self.dtype))
        else:
            out = self.model.encode_text(*self._pad_texts(prepared))
        return out.numpy().astype(np.float32, copy=False)

    def warmup(self) -> None:
        """Run each tower once on dummy input: the first oneDNN call of a shape family is slow
        (kernel selection), and it should not land on a client's request."""
        for modality in self.modalities:
            if modality == "image":
                self.encode("image", [torch.zeros(3, self.image_size, self.image_size)])
            else:
                self.encode("text", [self.prepare("text", "warm up")])

