"""Image decoding, and the preprocessing recipes the models were trained with.

A model's ``ImageRecipe`` (in its registry entry) says how its pixels are made:

- ``shortest_side_crop`` (CLIP's): resize so the short side is ``size`` (the long side
  ``int(size * long / short)``), then the centre ``size`` x ``size`` crop. ``crop_rounding``
  ``round`` puts the crop at ``round((side - size) / 2)`` as OpenAI's and open_clip's
  torchvision transform does; ``floor`` at ``(side - size) // 2`` as transformers' image
  processors do (one pixel apart on e.g. 640x427).
- ``squash`` (SigLIP's): resize straight to ``size`` x ``size``, aspect ratio not kept, no crop.

Then scale to [0, 1] and normalise with the recipe's mean and std.

Every image is converted to RGB *first*, as transformers does. OpenAI's and open_clip's own
transforms resize first and convert after, so a palette (P) image, a GIF say, is resized there
with nearest-neighbour on its palette indices; we resize the true colours with the recipe's
filter instead, which is what the model saw in training (its data were RGB photos).
"""

from __future__ import annotations

import io
import logging
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InvalidInputError, decoding, reason

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


@dataclass(frozen=True)
class ImageRecipe:
    """How one model's images are prepared (see the module's docstring)."""

    size: int
    resize: str = "shortest_side_crop"  # or "squash"
    crop_rounding: str = "round"  # or "floor"
    resample: str = "bicubic"  # or "bilinear"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.resize not in ("shortest_side_crop", "squash"):
            raise ValueError(f"unknown resize rule {self.resize!r}")
        if self.crop_rounding not in ("round", "floor"):
            raise ValueError(f"unknown crop rounding {self.crop_rounding!r}")
        if self.resample not in RESAMPLE:
            raise ValueError(f"unknown resampling filter {self.resample!r}")

# Our own bomb guard, checked on the header's size before any pixel is decoded. Pillow's guard
# (PIL.Image.MAX_IMAGE_PIXELS, a process-wide setting that belongs to the application) is left
# as it is and still applies: it warns past its limit and refuses past twice that, so a
# ``max_pixels`` above Pillow's limit needs the application to raise Pillow's too.
DEFAULT_MAX_PIXELS = 64_000_000

log = logging.getLogger("handspring_models")


def warn_if_pillow_limits(max_pixels: int) -> None:
    """Log a warning when ``max_pixels`` promises more than Pillow opens quietly."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and max_pixels > limit:
        log.warning("max_pixels=%d is above Pillow's decompression-bomb limit PIL.Image.MAX_IMAGE_PIXELS=%d: "
                    "Pillow warns on images over %d pixels and refuses those over %d; set "
                    "PIL.Image.MAX_IMAGE_PIXELS in the application to accept them quietly",
                    max_pixels, limit, limit, 2 * limit)


@contextmanager
def _pillow_guard():
    """Pillow's own bomb guard said no (its error, or its warning where warnings are errors)."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidInputError(f"image is over the limit of Pillow's decompression-bomb guard: {reason(e)}") from None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Decode encoded bytes into a fully loaded PIL image.

    ``draft_size`` lets a JPEG decoder scale by 1/2, 1/4 or 1/8 in the DCT while keeping both
    sides >= ``draft_size``: much faster on large photos, not bit-exact, so the exact mode
    leaves it unset. Bad bytes and images over ``max_pixels`` (or over Pillow's own guard)
    raise ``InvalidInputError``; faults of the machine propagate (see ``errors``).
    """
    with decoding("cannot open image"), _pillow_guard():
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InvalidInputError("not an image in a format we can decode") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidInputError("image has no pixels")
    if width * height > max_pixels:
        raise InvalidInputError(f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
    with decoding("cannot decode image"), _pillow_guard():  # truncated or corrupt data
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    with decoding(f"unsupported image mode {image.mode}"):
        return image.convert("RGB")


# Past this aspect ratio the full-size intermediate could be enormous (a 1x100000 strip would
# resize to 224x22M); there only the crop window is resampled, through PIL's ``box``.
_MAX_FULL_RESIZE_RATIO = 8


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Short side -> ``size``, long side -> ``int(size * long / short)`` (torchvision's rule)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_offsets(width: int, height: int, size: int, rounding: str = "round") -> tuple[int, int]:
    if rounding == "floor":
        return (width - size) // 2, (height - size) // 2
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))


def resize_and_crop(image: Image.Image, size: int, rounding: str = "round", resample: str = "bicubic") -> Image.Image:
    """Resize of the short side to ``size``, then the centre ``size`` x ``size`` crop."""
    width, height = image.size
    new_w, new_h = resized_size(width, height, size)
    left, top = crop_offsets(new_w, new_h, size, rounding)
    if max(new_w, new_h) > _MAX_FULL_RESIZE_RATIO * size:
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        return image.resize((size, size), RESAMPLE[resample], box=box)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), RESAMPLE[resample])
    return image.crop((left, top, left + size, top + size))


def normalize(image: Image.Image, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """uint8 HWC RGB -> float32 CHW, (x / 255 - mean) / std.

    In numpy on purpose: this runs in the server's decoding threads, where torch ops would each
    start an intra-op thread team and fight the inference thread for the cores."""
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    pixels = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def preprocess_image(image: Image.Image, recipe: ImageRecipe | int = 224) -> torch.Tensor:
    """A PIL image of any mode -> normalised float32 tensor [3, size, size]. ``recipe``: the
    model's, or a size for CLIP's recipe at that size."""
    if isinstance(recipe, int):
        recipe = ImageRecipe(recipe)
    image = to_rgb(image)
    if recipe.resize == "squash":
        if image.size != (recipe.size, recipe.size):
            image = image.resize((recipe.size, recipe.size), RESAMPLE[recipe.resample])
    else:
        image = resize_and_crop(image, recipe.size, recipe.crop_rounding, recipe.resample)
    return normalize(image, recipe.mean, recipe.std)
