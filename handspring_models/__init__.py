"""Handspring's models: small, exact, CPU-first PyTorch implementations of multimodal embedders.

    import handspring_models
    clip = handspring_models.load("clip_vit_b_32", weights_dir="weights/clip_vit_b_32")
    clip.embed_texts(["a dog"])                              # numpy float32 [1, 512], unit norm
    clip.embed_images([open("dog.jpg", "rb").read()])

    bind = handspring_models.load("imagebind_huge_audio")   # ImageBind, audio tower only
    bind.embed_audio([open("bark.wav", "rb").read()])        # [1, 1024]

    handspring_models.list_models()                          # every model: names, aliases, licences

Features name one modality of one model (``clip_vit_b_32_image``, ``imagebind_huge_audio``) or the
whole model (``clip_vit_b_32``, or any of its aliases); a feature loads only the weights of its
modalities. Where a model's story is: ``registry.py`` (what it is), ``<family>/`` (its maths,
checkpoint reader and embedder), ``inputs/`` (decoding), ``text/`` (tokenizers), ``weights/``
(folders and their command line), ``runtime/`` (precision and kernels).
"""

from __future__ import annotations

from pathlib import Path

from .embedder import Embedder, MissingModalityError
from .errors import InvalidInputError
from .inputs.image import DEFAULT_MAX_PIXELS
from .registry import FEATURES, ModelSpec, UnknownModelError, find_feature, find_model, list_models
from .runtime.backends import BACKENDS
from .runtime.precision import PRECISIONS
from ._version import distribution_version
from .weights import WeightsError, default_weights_dir

__version__ = distribution_version()
__all__ = ["load", "list_models", "find_model", "find_feature", "FEATURES", "PRECISIONS", "Embedder",
           "BACKENDS", "ModelSpec", "MissingModalityError", "InvalidInputError", "UnknownModelError", "WeightsError"]


def load(feature: str, weights_dir: str | Path | None = None, precision: str = "fp32",
         max_pixels: int = DEFAULT_MAX_PIXELS, normalize: bool | None = None, backend: str = "torch",
         **options) -> Embedder:
    """Load a feature (or a whole model, by its name or alias).

    ``weights_dir``: a folder as ``python -m handspring_models.weights convert --out`` writes it;
    by default ``$HANDSPRING_HOME/<model>`` (``~/.cache/handspring/<model>``).
    ``precision``: ``fp32`` (exact), ``bf16``, ``auto`` (bf16 where the CPU runs it natively) or
    ``int8`` (opt-in, CPUs with AVX512-VNNI; CLIP models; see ``runtime.precision``).
    ``normalize``: L2-normalize the vectors; None (the default) does what Weaviate's own container
    does for this model (``find_model(name).normalize``).
    ``backend``: ``torch`` (default) or ``openvino`` (the ``openvino`` extra: each tower converted
    once and cached beside the weights; see ``handspring_models.runtime.openvino_towers``).
    ``options``: the family's own, e.g. ImageBind's ``max_seconds`` (the longest audio or video)."""
    spec, feature, modalities = find_feature(feature)
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir(spec.name)
    embedder_class = spec.family_module().Embedder
    return embedder_class(spec, feature, modalities, folder, precision, max_pixels, normalize,
                          backend=backend, **options)
