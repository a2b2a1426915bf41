"""A loaded feature: the model towers it needs, their tokenizer/preprocessing, and one interface.

The interface is split in two so a server can batch across requests:
``prepare(modality, item)`` turns one raw input into a model-ready tensor (decoding, resizing,
tokenizing; safe to run in worker threads), ``encode(modality, prepared)`` runs one forward
pass over a list of prepared inputs. ``embed``/``embed_images``/``embed_texts`` chain the two.

This base class does what every family shares; ``handspring_models.<family>.Embedder``
subclasses it with the model's own maths.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .inputs.image import DEFAULT_MAX_PIXELS, InvalidInputError, decode_image, preprocess_image, warn_if_pillow_limits
from .registry import ModelSpec
from .runtime import backends
from .runtime import precision as precision_modes
from .runtime import int8_gemm, malloc, panel_gemm
from .runtime.kernels import int8_targets, linear_kernels, pack_linear_weights, set_weight
from .text import load_tokenizer
from .weights import WeightsError, load_component, manifest_sha256, read_config


class MissingModalityError(ValueError):
    """The loaded feature has no tower for the requested modality."""


class Embedder:
    """What every model shares: the weights folder, precision, the tokenizer, loading only the
    components (weight files) the feature's modalities need, the output convention, and the
    convenience methods. Subclasses say how to build the model and implement
    ``prepare``/``encode``/``warmup``.

    ``normalize``: L2-normalize the vectors; None takes the registry entry's convention (what
    Weaviate's own container returns for the model).

    ``backend``: ``torch`` runs our modules eagerly; ``openvino`` converts each tower once (see
    ``runtime.openvino_towers``) and runs it with OpenVINO. A family opts in by naming its towers
    in ``TOWERS`` and building their inputs in ``_batch``."""

    # What the vectors are when not normalized (``describe_output``).
    RAW_OUTPUT = "the model's raw projections (not normalized)"

    def __init__(self, spec: ModelSpec, feature: str, modalities: tuple[str, ...], folder: Path,
                 precision: str = "fp32", max_pixels: int = DEFAULT_MAX_PIXELS, normalize: bool | None = None,
                 backend: str = "torch"):
        self.spec = spec
        self.feature = feature
        self.model_name, self.modalities = spec.name, tuple(modalities)
        self.aliases = spec.aliases
        self.normalize = spec.normalize if normalize is None else bool(normalize)
        self.weights_dir = folder
        self.requested_precision = precision
        self.precision = precision_modes.resolve(precision)
        self.max_pixels = max_pixels
        if {"image", "depth", "thermal"} & set(self.modalities):
            warn_if_pillow_limits(max_pixels)
        self.dtype = precision_modes.DTYPES[self.precision]

        self.backend = backends.resolve(backend)
        if self.precision == "int8" and self.backend != "torch":
            raise precision_modes.PrecisionUnavailableError("precision int8 runs on the torch backend only")
        meta = read_config(folder)
        if meta.get("model") != self.model_name:
            raise WeightsError(f"{folder / 'config.json'} holds {meta.get('model')!r}, not {self.model_name!r}")
        self.license = meta.get("license")
        self.source = meta.get("source")  # where the weights came from ("random ..." for demo weights)
        self.manifest_sha256 = manifest_sha256(folder)
        self._read_architecture(meta["architecture"])
        # The registry's recipe at the size these weights were made for (a test model may be smaller).
        self.image_recipe = (dataclasses.replace(spec.image, size=self.image_size)
                             if spec.image is not None and hasattr(self, "image_size") else spec.image)
        # JPEG draft decoding is an approximation: only the fast modes use it, never below 2x the input size.
        self.draft_size = None if self.precision == "fp32" or self.image_recipe is None else 2 * self.image_recipe.size

        # The tokenizer (pure Python) builds in a thread while the weights load (native code that
        # releases the GIL): ~0.2 s off start-up.
        tokenizer = None
        if "text" in self.modalities:
            pool = ThreadPoolExecutor(1, thread_name_prefix="handspring-tokenizer")
            tokenizer = pool.submit(self._load_tokenizer, folder)
            pool.shutdown(wait=False)  # the submitted build still runs; result() below waits for it
        self.model, self.packed_weights = None, 0
        if self.backend == "torch":
            self.model = self._load_model(meta, self.dtype, int8=self.precision == "int8")
            self.packed_weights = pack_linear_weights(self.model)
            malloc.keep_freed_buffers()  # after the load's own buffers: a pass's stay mapped for the next
            self.extras = self._extras(self.model)
        self.tokenizer = tokenizer.result() if tokenizer is not None else None
        if self.backend == "openvino":  # after the tokenizer: a text tower is traced on real token ids
            self._compiled, self.extras = self._compile_towers(meta)

    def _load_model(self, meta: dict, dtype: torch.dtype, int8: bool = False) -> torch.nn.Module:
        """The family's model with this feature's weights in it, in eval mode, weights unpacked;
        with ``int8``, its ``int8_targets`` quantized as each is read (the peak stays near the
        quantized model's size, not the fp32 model's)."""
        with torch.device("meta"):  # no memory for weights about to be replaced
            model = self._build_model()
        targets = int8_targets(model) if int8 else {}

        def quantize(name: str, tensor: torch.Tensor) -> int8_gemm.Int8Weight | None:
            if name not in targets or tensor.shape != getattr(*targets[name]).shape:
                return None  # a misfit is left for load_state_dict to report
            return int8_gemm.quantize(tensor.flatten(1))  # a patch projection's [out, c, p, p] as its matrix

        state: dict[str, torch.Tensor] = {}
        for component in self._components():
            filename = meta["components"].get(component)
            if filename is None:
                raise WeightsError(f"{self.weights_dir / 'config.json'} lists no {component} component")
            state.update(load_component(self.weights_dir, filename, dtype, mapped=self.LOOKUP_TABLES.get(component, ()),
                                        convert=quantize if targets else None))
        self._adjust_state(state)
        quantized = {name: state.pop(name) for name in targets if isinstance(state.get(name), int8_gemm.Int8Weight)}
        for name in quantized:
            state[name] = getattr(*targets[name])  # the meta parameter itself, swapped out below
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            raise WeightsError(f"weights in {self.weights_dir} do not fit the {self.model_name} architecture: {e}") from None
        del state  # the model holds the only reference now, so packing frees each dense weight as it goes
        for name, weight in quantized.items():
            set_weight(*targets[name], weight)
        return model.eval().requires_grad_(False)

    def _compile_towers(self, meta: dict) -> tuple[dict, dict]:
        """Each modality's tower, converted once (cached beside the weights, else in the user
        cache) and compiled by OpenVINO. The PyTorch weights are read only to convert."""
        from .runtime import openvino_towers
        from .weights import home

        missing = [m for m in self.modalities if m not in self.TOWERS]
        if missing:
            raise backends.BackendUnavailableError(
                f"the openvino backend has no tower for {self.model_name}'s {', '.join(missing)}; use backend='torch'")
        # Every source file of the library: a family may build on another's modules (multilingual
        # CLIP on CLIP's ViT), and a stale IR would silently compute an old model.
        code = sorted(Path(__file__).parent.rglob("*.py"))
        roots = [self.weights_dir / "openvino", home() / "openvino" / self.model_name]
        fp32_model: list[torch.nn.Module] = []  # loaded at most once, only if a tower needs converting

        def build(modality: str):
            def tower():
                if not fp32_model:
                    fp32_model.append(self.dense_model())
                model = fp32_model[0]
                return Tower(model, self.TOWERS[modality]), self._example(modality), self._extras(model)
            return tower

        compiled, extras = {}, {}
        for modality in self.modalities:
            key = openvino_towers.cache_key(self.manifest_sha256, code, modality)
            compiled[modality], tower_extras = openvino_towers.load_tower(
                roots, key, modality, self.precision, torch.get_num_threads(), build(modality))
            extras.update(tower_extras)
        return compiled, extras

    def dense_model(self) -> torch.nn.Module:
        """A fresh copy of this feature's model in fp32 with plain (unpacked) weights: what a
        converter or exporter reads. ``tower_inputs`` builds its towers' inputs."""
        return self._load_model(read_config(self.weights_dir), torch.float32)

    @property
    def linear_kernels(self) -> dict[str, int] | None:
        """How many linear weights each kernel runs (``kernels.linear_kernels``); None on the
        openvino backend, whose kernels are OpenVINO's."""
        return linear_kernels(self.model) if self.model is not None else None

    @property
    def panel_kernel_build(self) -> str | None:
        """The build of the panel kernel ("avx512", "avx2") that runs this model's panel-packed
        layers; None where none are."""
        counts = self.linear_kernels
        return panel_gemm.isa() if counts and counts["panel"] else None

    @property
    def runs_precision(self) -> str:
        """The precision the forward passes really run in (the openvino backend may run a bf16
        request in fp32 on a CPU without native bf16)."""
        if self.backend == "openvino":
            runs = {tower.runs_precision for tower in self._compiled.values()}
            return runs.pop() if len(runs) == 1 else ",".join(sorted(runs))
        return self.precision

    def _example(self, modality: str) -> tuple[torch.Tensor, ...]:
        """A small batch of two different inputs, to trace a tower on."""
        if modality == "image":
            items = [torch.zeros(3, self.image_size, self.image_size), torch.ones(3, self.image_size, self.image_size)]
        else:
            items = [self.prepare("text", "a photo of a dog"), self.prepare("text", "two")]
        return self.tower_inputs(modality, items)

    def _extras(self, model: torch.nn.Module) -> dict:
        """Numbers the family reports beside its vectors, read from the loaded model (kept when
        the model's towers are compiled away)."""
        return {}

    # --- what a model says about itself
    # The model's method that encodes each modality from ``_batch``'s tensors: what a backend
    # other than torch converts. Empty: the family runs on torch only.
    TOWERS: dict[str, str] = {}
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
        return sorted({self.spec.components[m] for m in self.modalities})

    def _adjust_state(self, state: dict[str, torch.Tensor]) -> None:
        """A last look at the loaded tensors before they go into the model."""

    def _load_tokenizer(self, folder: Path):
        spec = dataclasses.replace(self.spec.tokenizer, context_length=self.context_length)
        for name in spec.files:
            if not (folder / name).is_file():
                raise WeightsError(f"{folder / name} is missing")
        try:
            return load_tokenizer(spec, folder)
        except (ValueError, UnicodeDecodeError, RuntimeError) as e:
            raise WeightsError(f"the tokenizer files {', '.join(spec.files)} in {folder} are unusable: {e}") from None

    # ------------------------------------------------------------ two-step interface

    def require(self, modality: str) -> None:
        if modality not in self.modalities:
            wanted = f"{self.model_name}_{modality}" if modality in self.spec.modalities else None
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

    def _image_pixels(self, item) -> torch.Tensor:
        if isinstance(item, (bytes, bytearray, memoryview)):
            item = decode_image(bytes(item), self.max_pixels, self.draft_size)
        elif not isinstance(item, Image.Image):
            raise InvalidInputError(f"an image must be encoded bytes or a PIL image, not {type(item).__name__}")
        return preprocess_image(item, self.image_recipe)

    @torch.inference_mode()
    def encode(self, modality: str, prepared: Sequence[torch.Tensor]) -> np.ndarray:
        """One forward pass over prepared inputs -> [n, dim] float32 (see ``normalize``)."""
        self.require(modality)
        if len(prepared) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.finish(self._forward(modality, prepared))

    def tower_inputs(self, modality: str, prepared: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """A non-empty list of prepared inputs -> the input tensors of the model's ``TOWERS[modality]``
        method (float ones in float32)."""
        raise NotImplementedError

    def _forward(self, modality: str, prepared: Sequence[torch.Tensor]) -> torch.Tensor:
        """The forward pass over a non-empty list of prepared inputs -> [n, dim]."""
        batch = self.tower_inputs(modality, prepared)
        if self.backend == "openvino":
            return self._compiled[modality](*batch)
        inputs = (t.to(self.dtype) if t.is_floating_point() else t for t in batch)
        return getattr(self.model, self.TOWERS[modality])(*inputs)

    def warmup(self) -> None:
        """Run each tower once on dummy input: the first oneDNN call of a shape family is slow
        (kernel selection), and it should not land on a client's request. (Image and text
        towers; a family with other modalities overrides it.)"""
        for modality in self.modalities:
            if modality == "image":
                self.encode("image", [torch.zeros(3, self.image_size, self.image_size)])
            else:
                self.encode("text", [self.prepare("text", "warm up")])

    def finish(self, vectors: torch.Tensor) -> np.ndarray:
        """A tower's output [n, dim] -> the vectors ``encode`` returns: float32 numpy, L2-normalized if asked."""
        vectors = vectors.float()
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.numpy()

    def describe_output(self) -> str:
        return "unit vectors (L2-normalized)" if self.normalize else self.RAW_OUTPUT

    # ------------------------------------------------------------ convenience

    def embed(self, modality: str, items: Sequence) -> np.ndarray:
        return self.encode(modality, [self.prepare(modality, item) for item in items])

    def embed_images(self, images: Sequence) -> np.ndarray:
        """PIL images or encoded image bytes -> [n, dim] float32 vectors."""
        return self.embed("image", images)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> [n, dim] float32 vectors."""
        return self.embed("text", texts)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.feature} {self.precision} {self.backend} from {self.weights_dir}>"


class Tower(torch.nn.Module):
    """One of a model's encode methods as a module of its own, for a converter to trace."""

    def __init__(self, model: torch.nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(*inputs)


