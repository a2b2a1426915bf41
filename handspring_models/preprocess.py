"""Image decoding and CLIP preprocessing, with OpenAI CLIP's exact semantics.

Pipeline (OpenAI's ``clip.load`` transform): any PIL mode -> ``convert("RGB")``; resize so the
short side is ``size`` with PIL bicubic (the long side ``int(size * long / short)``); centre crop
with offsets ``round((side - size) / 2)``; scale to [0, 1]; normalise with CLIP's mean/std.
(transformers' CLIPImageProcessor floors the crop offset instead, one pixel off on e.g. 640x427.)
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Our own bomb guard; PIL's is turned off so the limit is one clear setting, not a warning.
DEFAULT_MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = None


class InvalidInputError(ValueError):
    """The client sent something that is not a usable input (bad bytes, bomb, odd mode...)."""


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Decode encoded bytes into a fully loaded PIL image.

    ``draft_size`` lets a JPEG decoder scale by 1/2, 1/4 or 1/8 in the DCT while keeping both
    sides >= ``draft_size``: much faster on large photos, not bit-exact, so the exact mode
    leaves it unset.
    """
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidInputError("not an image in a format we can decode") from None
    except Exception as e:  # PIL raises many types on malformed headers
        raise InvalidInputError(f"cannot open image: {e}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidInputError("image has no pixels")
    if width * height > max_pixels:
        raise InvalidInputError(f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
    if draft_size is not None and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    try:
        image.load()
    except Exception as e:  # truncated or corrupt data
        raise InvalidInputError(f"cannot decode image: {e}") from None
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise InvalidInputError(f"unsupported image mode {image.mode}: {e}") from None


# Past this aspect ratio the full-size intermediate could be enormous (a 1x100000 strip would
# resize to 224x22M); there only the crop window is resampled, through PIL's ``box``.
_MAX_FULL_RESIZE_RATIO = 8


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Short side -> ``size``, long side -> ``int(size * long / short)`` (torchvision's rule)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_offsets(width: int, height: int, size: int) -> tuple[int, int]:
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))


def resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize of the short side to ``size``, then the centre ``size`` x ``size`` crop."""
    width, height = image.size
    new_w, new_h = resized_size(width, height, size)
    left, top = crop_offsets(new_w, new_h, size)
    if max(new_w, new_h) > _MAX_FULL_RESIZE_RATIO * size:
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        return image.resize((size, size), Image.BICUBIC, box=box)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    return image.crop((left, top, left + size, top + size))


def normalize(image: Image.Image, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """uint8 HWC RGB -> float32 CHW, (x / 255 - mean) / std.

    In numpy on purpose: this runs in the server's decoding threads, where torch ops would each
    start an intra-op thread team and fight the inference thread for the cores."""
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    pixels = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def preprocess_image(image: Image.Image, size: int = 224) -> torch.Tensor:
    """A PIL image of any mode -> normalised float32 tensor [3, size, size]."""
    image = resize_and_crop(to_rgb(image), size)
    return normalize(image)
