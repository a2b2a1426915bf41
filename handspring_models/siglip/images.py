"""SigLIP's image preprocessing, as transformers' ``SiglipImageProcessor`` does it with the
published ``preprocessor_config.json``: any mode to RGB, with transparency composited onto white
(transformers' ``convert_to_rgb``), then the registry's ``squash`` recipe (``inputs.image``):
resize straight to the square size with the config's filter (bicubic for SigLIP, bilinear for
SigLIP 2), x / 255, (x - 0.5) / 0.5.

SigLIP 2's published config has ``do_convert_rgb: null``, with which transformers fails on L, RGBA
and P images; here every mode is converted, as SigLIP's own config asks.
"""

from __future__ import annotations

import torch
from PIL import Image

from ..errors import decoding
from ..inputs.image import ImageRecipe, preprocess_image, to_rgb


def has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or image.info.get("transparency") is not None


def to_rgb_on_white(image: Image.Image) -> Image.Image:
    """RGB, with transparent pixels composited onto white, so a transparent PNG looks as it does
    on a page (and as transformers gives it to the model)."""
    if not has_alpha(image):
        return to_rgb(image)
    with decoding(f"unsupported image mode {image.mode}"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")


def preprocess(image: Image.Image, recipe: ImageRecipe) -> torch.Tensor:
    """A PIL image of any mode -> normalized float32 [3, size, size]."""
    return preprocess_image(to_rgb_on_white(image), recipe)
