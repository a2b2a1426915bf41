"""SigLIP's image preprocessing, as transformers' ``SiglipImageProcessor`` does it with the
published ``preprocessor_config.json``: any mode to RGB (transparency composited onto white),
resize straight to the model's square size (no crop, aspect ratio not kept) with the config's
filter (bicubic for SigLIP, bilinear for SigLIP 2), x / 255, then (x - 0.5) / 0.5.

SigLIP 2's published config has ``do_convert_rgb: null``, with which transformers fails on L, RGBA
and P images; here every mode is converted, as SigLIP's own config asks.
"""

from __future__ import annotations

import torch
from PIL import Image

from ..errors import decoding
from ..preprocess import normalize, to_rgb

RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or image.info.get("transparency") is not None


def to_rgb_on_white(image: Image.Image) -> Image.Image:
    """RGB, with transparent pixels composited onto white (transformers' ``convert_to_rgb``), so a
    transparent PNG looks as it does on a page."""
    if not has_alpha(image):
        return to_rgb(image)
    with decoding(f"unsupported image mode {image.mode}"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")


def preprocess(image: Image.Image, size: int, resample: str = "bicubic", mean=(0.5, 0.5, 0.5),
               std=(0.5, 0.5, 0.5)) -> torch.Tensor:
    """A PIL image of any mode -> normalized float32 [3, size, size]."""
    image = to_rgb_on_white(image)
    if image.size != (size, size):
        image = image.resize((size, size), RESAMPLE[resample])
    return normalize(image, mean, std)
