"""Handspring's models: small, exact, CPU-first PyTorch implementations of multimodal embedders.

    import handspring_models
    clip = handspring_models.load("clip_vit_b_32")          # both towers
    clip.embed_texts(["a dog"])                              # numpy float32 [1, 512], unit norm
    clip.embed_images([open("dog.jpg", "rb").read()])

    bind = handspring_models.load("imagebind_huge_audio")   # ImageBind, audio tower only
    bind.embed_audio([open("bark.wav", "rb").read()])        # [1, 1024]

Features name one modality of one model (``clip_vit_b_32_image``, ``imagebind_huge_audio``) or the
whole model (``clip_vit_b_32``, ``imagebind_huge``); a feature loads only the weights of its modalities.
"""

from __future__ import annotations

from pathlib import Path

from .embedder import FEATURES, CLIPEmbedder, Embedder, MissingModalityError
from .precision import PRECISIONS
from .errors import InvalidInputError
from .preprocess import DEFAULT_MAX_PIXELS
from ._version import distribution_version
from .weights import WeightsError, default_weights_dir

__version__ = distribution_version()
__all__ = ["load", "FEATURES", "PRECISIONS", "MissingModalityError", "InvalidInputError", "WeightsError"]


def load(feature: str, weights_dir: str | Path | None = None, precision: str = "fp32",
         max_pixels: int = DEFAULT_MAX_PIXELS, normalize: bool = True, max_seconds: float = 600.0) -> Embedder:
    """Load a feature. ``weights_dir`` is a folder as ``convert --out`` writes it; by default
    ``$HANDSPRING_WEIGHTS_DIR``, else ``weights/<model>/`` in this repository.
    ``precision``: ``fp32`` (exact), ``bf16`` or ``auto`` (bf16 where the CPU runs it natively).
    ``normalize=False`` (ImageBind only) returns the reference model's raw, per-modality scaled
    outputs instead of unit vectors; CLIP's are always unit vectors. ``max_seconds`` (ImageBind):
    the longest audio or video accepted."""
    if feature not in FEATURES:
        raise ValueError(f"unknown feature {feature!r}; known: {', '.join(FEATURES)}")
    model = FEATURES[feature][0]
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir(model)
    if model.startswith("imagebind"):
        from .imagebind_embedder import ImageBindEmbedder

        return ImageBindEmbedder(feature, folder, precision, max_pixels, normalize=normalize, max_seconds=max_seconds)
    return CLIPEmbedder(feature, folder, precision, max_pixels)
