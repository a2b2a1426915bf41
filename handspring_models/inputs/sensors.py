"""ImageBind's depth, thermal and IMU inputs, from the bytes Weaviate's multi2vec-bind module sends.

ImageBind (facebookresearch/ImageBind) defines only the tensors: depth and thermal ``[1, 224, 224]``
(one-channel 16x16 patch stems), IMU ``[6, 2000]`` (8-sample patches of all six channels, a
positional embedding for exactly 250 of them). It ships no loaders. Its training data were not
plain images: depth came from SUN RGB-D as metric *disparity* (baseline * focal / depth, the
Omnivore recipe, which needs the camera's intrinsics), thermal from LLVIP, IMU from Ego4D. None
of that can be recovered from a bare image, so we follow the contract of Weaviate's own container
(weaviate/multi2vec-bind-inference, ``bind_data.py``), whose vectors our users already store:

Depth and thermal (identical pipelines)
    1. decode with ``preprocess.decode_image`` (same pixel limit and errors as CLIP images);
    2. bring to one grey channel in [0, 1]:
       - 8-bit images: ``convert("L")`` as Weaviate does. RGB uses PIL's ITU-R 601-2 luma, which
         is exact for grey stored as RGB (LLVIP's thermal JPEGs are R = G = B) but meaningless
         for false-colour maps: send greyscale. Alpha is dropped, not composited: blending a depth
         or temperature map with a background colour would invent values.
       - 16-bit images (``I;16*``, PNG/TIFF depth maps) and 32-bit integer ``I``: value / 65535,
         ``I`` clipped to [0, 65535] first. **Here we differ from Weaviate**: its
         ``convert("L")`` clips 16-bit values at 255, so any real 16-bit map (millimetres,
         raw radiometric counts) turns almost entirely white. We keep the full scale instead,
         the way image tools reduce 16 bits to 8 (an 8-bit image widened by x257 comes out
         within one 8-bit grey level of the original). The range is not stretched per image:
         absolute scale is information, and a map in millimetres is therefore dark; scale it to
         the full range (near = bright, as disparity is) before sending if that is what you mean.
       - 32-bit float ``F`` is refused: there is no agreed scale (metres? [0, 1]? [0, 255]?).
    3. short side to 224 with PIL bicubic, centre crop 224 (``preprocess.resize_and_crop``, the
       torchvision Resize/CenterCrop rule Weaviate uses); 16-bit maps are resampled in ``I;16``,
       which rounds and clamps like ``L`` but keeps 16 bits;
    4. ``(x - 0.48145466) / 0.26862954``: CLIP's red-channel statistics, Weaviate's choice.
    For 8-bit input the result equals Weaviate's tensor exactly (same PIL operations), except past
    an 8:1 aspect ratio, where ``resize_and_crop`` resamples only the crop window.

IMU (CSV text, UTF-8)
    Weaviate reads it with ``np.loadtxt(delimiter=",", skiprows=1)`` and then *reshapes* the
    ``[n, 6]`` array to ``[6, n]``, which reinterprets memory instead of transposing: its "gyro x"
    row is the first n/6 samples of all six channels interleaved, and its crop to 2000 takes
    pieces of six different time spans. **We transpose**: row c of the output is column c of
    the file over time. Otherwise its contract stands:
    - the first non-blank line is a header and is skipped whatever it says (a header of numbers,
      such as pandas' ``0,1,2,3,4,5``, is still a header);
    - then exactly 6 comma-separated numbers a line: gyro x, y, z, then accel x, y, z (Ego4D's
      column order, ``gyro_*`` before ``accl_*``, which Weaviate's sample files keep); no
      timestamp column, as the model's patch layer takes 6 channels. Whitespace around values and
      blank lines are ignored; values are used as given, unscaled, in float32;
    - the leading 2000 samples are used; shorter recordings are zero-padded at the end.
    Unlike Weaviate (which answers 500 or computes on NaN), empty files, ragged or non-numeric rows,
    NaN/inf and float32 overflow are refused with the offending line named.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import InvalidInputError, decoding
from .image import CLIP_MEAN, CLIP_STD, DEFAULT_MAX_PIXELS, decode_image, resize_and_crop

SENSOR_IMAGE_SIZE = 224
# Weaviate normalises one-channel images with the first (red) entries of CLIP's mean and std.
GREY_MEAN = CLIP_MEAN[0]
GREY_STD = CLIP_STD[0]

IMU_CHANNELS = 6
IMU_SAMPLES = 2000
IMU_COLUMNS = "gyro x,y,z then accel x,y,z"
# Every row is parsed and checked (a corrupt tail means a corrupt file), so the size is capped:
# 100k samples is 50 windows, ~8 minutes at Ego4D's ~200 Hz; ~0.5 s of parsing on 2 busy cores.
MAX_IMU_BYTES = 16 * 1024 * 1024
MAX_IMU_ROWS = 100_000

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_UINT16_MAX = 65535


# ---------------------------------------------------------------------------------------------
# Depth and thermal

def _grey_resized(image: Image.Image, size: int) -> np.ndarray:
    """Any PIL image -> float32 [size, size] grey levels in [0, 1], resized and centre-cropped."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # One 16-bit layout (native I;16, clipped), so PIL resamples it with 16-bit clamping.
        levels = np.clip(np.asarray(image), 0, _UINT16_MAX).astype(np.uint16)
        resized = resize_and_crop(Image.fromarray(levels), size)
        return np.asarray(resized, dtype=np.float32) / np.float32(_UINT16_MAX)
    if image.mode == "F":
        raise InvalidInputError("32-bit float images have no defined grey scale: send 8- or 16-bit greyscale")
    if image.mode != "L":
        with decoding(f"unsupported image mode {image.mode}"):
            image = image.convert("L")  # luma for colour; alpha dropped
    resized = resize_and_crop(image, size)
    return np.asarray(resized, dtype=np.float32) / np.float32(255.0)


def _preprocess_single_channel(data: bytes, max_pixels: int) -> torch.Tensor:
    grey = _grey_resized(decode_image(data, max_pixels), SENSOR_IMAGE_SIZE)
    # numpy, not torch: this runs in decoding threads (see preprocess.normalize).
    pixels = (grey - np.float32(GREY_MEAN)) / np.float32(GREY_STD)
    return torch.from_numpy(np.ascontiguousarray(pixels[None]))


def preprocess_depth(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Encoded depth image (8- or 16-bit grey, brighter = nearer) -> float32 [1, 224, 224]."""
    return _preprocess_single_channel(data, max_pixels)


def preprocess_thermal(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Encoded thermal image (8- or 16-bit grey, brighter = hotter) -> float32 [1, 224, 224]."""
    return _preprocess_single_channel(data, max_pixels)


# ---------------------------------------------------------------------------------------------
# IMU

def _shown(token: str) -> str:
    return repr(token if len(token) <= 24 else token[:24] + "...")


def _parse_imu_csv(data: bytes, max_bytes: int, max_rows: int) -> np.ndarray:
    """CSV bytes -> float32 [n, 6], one row per sample, after the header line."""
    if len(data) > max_bytes:
        raise InvalidInputError(f"IMU file is {len(data)} bytes, over the limit of {max_bytes}")
    try:
        text = data.decode("utf-8-sig")  # a BOM from spreadsheet exports is not part of the header
    except UnicodeDecodeError:
        raise InvalidInputError("IMU file is not UTF-8 text") from None
    lines = text.splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise InvalidInputError("IMU file is empty")
    rows = numbered[1:]  # the first non-blank line is the header
    if not rows:
        raise InvalidInputError("IMU file has a header but no data rows")
    if len(rows) > max_rows:
        raise InvalidInputError(f"IMU file has {len(rows)} data rows, over the limit of {max_rows}")

    values = np.empty((len(rows), IMU_CHANNELS), dtype=np.float64)
    for r, (line_no, line) in enumerate(rows):
        fields = line.split(",")
        if len(fields) != IMU_CHANNELS:
            raise InvalidInputError(f"IMU line {line_no}: expected {IMU_CHANNELS} comma-separated values "
                                    f"({IMU_COLUMNS}, no timestamp), got {len(fields)}")
        try:
            values[r] = [float(f) for f in fields]
        except ValueError:
            column = next(c for c, f in enumerate(fields) if not _is_number(f))
            raise InvalidInputError(f"IMU line {line_no}, column {column + 1}: {_shown(fields[column].strip())} "
                                    "is not a number") from None

    with np.errstate(over="ignore"):
        samples = values.astype(np.float32)
    bad = ~np.isfinite(samples)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        what = "out of float32 range" if np.isfinite(values[r, c]) else f"not finite ({values[r, c]})"
        raise InvalidInputError(f"IMU line {rows[r][0]}, column {c + 1}: value is {what}")
    return samples


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def preprocess_imu(data: bytes, max_bytes: int = MAX_IMU_BYTES, max_rows: int = MAX_IMU_ROWS) -> torch.Tensor:
    """IMU CSV bytes (header, then ``gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z`` rows) -> float32
    [6, 2000]: row c is CSV column c over time, the first 2000 samples, zero-padded at the end."""
    samples = _parse_imu_csv(data, max_bytes, max_rows)
    out = np.zeros((IMU_CHANNELS, IMU_SAMPLES), dtype=np.float32)
    kept = samples[:IMU_SAMPLES]
    out[:, : len(kept)] = kept.T
    return torch.from_numpy(out)
