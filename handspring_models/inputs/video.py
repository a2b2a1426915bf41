"""Video decoding and ImageBind's video preprocessing, without torchvision, pytorchvideo or decord.

ImageBind's pipeline (``imagebind/data.py``, ``load_and_transform_video_data``, which reads the
file through pytorchvideo's ``EncodedVideo`` with the decord backend), reproduced here:

1. frame count ``n`` = packets of the best video stream, ``fps`` = its average frame rate,
   duration = ``n / fps`` (decord's and pytorchvideo's definitions, not the container's);
2. five 2 s clips placed by pytorchvideo's ``ConstantClipsPerVideoSampler`` (``timeline``);
3. a clip [start, end] holds the frames ``ceil(fps * start) <= i < min(ceil(fps * end), n)``
   (indices in presentation order), and ``UniformTemporalSubsample(2)`` keeps its first and
   last: ten frame indices per video;
4. each frame decoded to RGB24 (decord turns frames upright as the display matrix says),
   float32, ``/ 255``, laid out ``[C, T, H, W]``;
5. ``ShortSideScale(224)``: bilinear ``interpolate`` (``align_corners=False``, no antialias)
   to short side 224, long side ``floor(long / short * 224)``;
6. normalised with CLIP's mean/std, then three 224 x 224 crops along the long side
   (start, centre with offset ``ceil((long - 224) / 2)``, end);
7. the 15 crops (clip-major, crop-minor) stacked: ``[15, 3, 2, 224, 224]``.

Steps 2-7 are the reference's own arithmetic and agree with it to the bit. Decoded pixels are
FFmpeg's in both (decord 0.6.0 bundles FFmpeg 4.1; PyAV a current FFmpeg) and are equal for
8-bit 4:2:0 with even height, 4:2:2, 4:4:4 and full-range video; swscale's generic path
(odd-height 4:2:0, >8-bit input) interpolates chroma differently between the two versions.
Where decord's own seeking lands on the wrong frame (seen with MPEG-4 Part 2 B-frames, MPEG-TS
and HEVC) we return the frame its index names, not decord's mistake.

We seek to the keyframe before each wanted frame rather than decode the whole video, matching
frames by presentation timestamp; anything irregular falls back to decoding from the start.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from typing import TypeVar

import av
import numpy as np
import torch

from ..errors import InvalidInputError, decoding, is_machine_fault
from .image import CLIP_MEAN, CLIP_STD
from .timeline import clip_spans

IMAGEBIND_VIDEO_CLIP_SECONDS = 2
IMAGEBIND_VIDEO_CLIPS = 5
IMAGEBIND_FRAMES_PER_CLIP = 2
IMAGEBIND_VIDEO_SIZE = 224

# Limits on what a client may send. Only ten frames are decoded, but every packet is read to
# count frames, and each frame is converted at full size (float32) before it is scaled down.
DEFAULT_MAX_VIDEO_SECONDS = 600.0
DEFAULT_MAX_VIDEO_PIXELS = 2 * 3840 * 2160
MAX_VIDEO_FRAMES = 200_000
# Past this the short-side scale would build huge strips (1:100 -> 224 x 22400 per frame).
MAX_VIDEO_ASPECT_RATIO = 16.0

# decord's orientation handling: rotation (counter-clockwise degrees in [-180, 180], as PyAV reads
# the display matrix) -> quarter turns for np.rot90. Other angles are left alone, as decord does.
_QUARTER_TURNS = {90: 1, 180: 2, -180: 2, -90: 3}

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Which frames


def subsample_indices(length: int, count: int) -> list[int]:
    """pytorchvideo's ``uniform_temporal_subsample``: ``linspace(0, length - 1, count)`` in
    float32, truncated. For ``count == 2``: the first and the last frame."""
    if length < 1:
        raise ValueError("cannot subsample an empty clip")
    steps = torch.linspace(0, length - 1, count)
    return torch.clamp(steps, 0, length - 1).long().tolist()


def select_frame_indices(frame_count: int, fps: float) -> list[list[int]]:
    """Frame indices (presentation order) ImageBind takes: 5 clips x 2 frames.

    ``fps * start`` is float arithmetic, as in pytorchvideo's decord reader (``float * Fraction``
    is a float in Python); the clip is half-open and cut at the last frame.
    """
    duration = float(frame_count) / float(fps)
    clips = []
    for start, end in clip_spans(duration, IMAGEBIND_VIDEO_CLIP_SECONDS, IMAGEBIND_VIDEO_CLIPS):
        first = math.ceil(fps * float(start))
        stop = min(math.ceil(fps * float(end)), frame_count)
        if stop <= first:  # the reference fails here too (an empty clip)
            raise InvalidInputError(f"no frame in the clip at {float(start):.2f} s: "
                                    f"frame rate {fps:g} is too low for {frame_count} frames")
        clips.append([first + k for k in subsample_indices(stop - first, IMAGEBIND_FRAMES_PER_CLIP)])
    return clips


# ---------------------------------------------------------------------------------------------
# Decoding


def _open(data: bytes) -> av.container.InputContainer:
    with decoding("not a video in a format we can decode"):
        # metadata_errors: a malformed tag must not fail the whole file on UTF-8 decoding.
        return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")


def _best_video_stream(container: av.container.InputContainer):
    try:
        stream = container.streams.best("video")
    except (av.FFmpegError, ValueError) as e:
        if is_machine_fault(e):
            raise
        stream = None
    if stream is None:
        raise InvalidInputError("no video stream")
    if stream.codec_context is None:  # a codec FFmpeg does not know, or no codec description at all
        raise InvalidInputError("no decoder for this video stream's codec")
    return stream


def _frame_rate(stream) -> float:
    """``avg_frame_rate`` as a double, as decord's ``get_avg_fps`` computes it.

    When the container gives none, decord returns NaN and ImageBind fails; we use FFmpeg's
    guess (r_frame_rate, else the codec's) instead of refusing."""
    rate = stream.average_rate or stream.guessed_rate
    if rate is None or rate <= 0:
        raise InvalidInputError("video has no usable frame rate")
    return float(rate.numerator) / float(rate.denominator)


class _Packets:
    """The video stream's packets as decord indexes them: one frame each, in file order."""

    def __init__(self) -> None:
        self.pts: list[int | None] = []
        self.dts: list[int | None] = []
        self.key: list[bool] = []

    def __len__(self) -> int:
        return len(self.pts)


def _index_packets(container, stream, limit: int) -> _Packets:
    packets = _Packets()
    # Only PyAV's own errors are about the data here; the loop body is ours.
    with decoding("corrupt video container", av.FFmpegError):
        for packet in container.demux(stream):
            if packet.size == 0 and packet.dts is None:  # PyAV's end-of-stream flush packet
                continue
            packets.pts.append(packet.pts)
            packets.dts.append(packet.dts)
            packets.key.append(packet.is_keyframe)
            if len(packets) > limit:
                break
    return packets


class _Fallback(Exception):
    """Timestamps cannot be trusted to find the frames; decode from the start instead."""


def _check_frame_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InvalidInputError("video frames have no pixels")
    if width * height > max_pixels:
        raise InvalidInputError(f"video frames are {width}x{height} = {width * height} pixels, "
                                f"over the limit of {max_pixels}")
    if max(width, height) > MAX_VIDEO_ASPECT_RATIO * min(width, height):
        raise InvalidInputError(f"video frames are {width}x{height}, an aspect ratio over "
                                f"{MAX_VIDEO_ASPECT_RATIO:g}:1")


def frame_to_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """A decoded frame -> uint8 ``[H, W, 3]`` RGB, upright, as decord delivers it.

    decord's filter graph scales every frame to the stream's declared size (bilinear, a no-op
    unless the size changes mid-stream) and converts to RGB24 with the frame's colour matrix and
    range; PyAV's ``to_ndarray`` uses the same swscale defaults. Then the display rotation.
    """
    rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
    turns = _QUARTER_TURNS.get(frame.rotation, 0)
    if turns:
        rgb = np.rot90(rgb, turns)
    return np.ascontiguousarray(rgb)


def _frames_by_seeking(container, stream, packets: _Packets, wanted: list[int], size: tuple[int, int],
                       max_pixels: int, convert: Callable[[np.ndarray], T]) -> dict[int, T]:
    """Frame index i is the frame with the i-th smallest packet pts (decord's index). For each
    wanted index, seek to the last keyframe at or before it unless decoding on is shorter."""
    if any(p is None for p in packets.pts):
        raise _Fallback
    order = sorted(packets.pts)
    if len(set(order)) != len(order):
        raise _Fallback
    keyframes = [i for i, k in enumerate(packets.key) if k]
    if not keyframes:
        raise _Fallback

    found: dict[int, T] = {}
    frames: Iterator[av.VideoFrame] | None = None
    last_pts: int | None = None
    for index in sorted(set(wanted)):
        target = order[index]
        starts = [i for i in keyframes if packets.pts[i] <= target]
        if not starts:
            raise _Fallback
        key = starts[-1]
        if frames is None or last_pts is None or packets.pts[key] > last_pts:
            if frames is not None or key != keyframes[0]:
                seek_to = packets.dts[key] if packets.dts[key] is not None else packets.pts[key]
                container.seek(seek_to, stream=stream, backward=True)
            frames = container.decode(stream)
            last_pts = None
        for frame in frames:
            if frame.pts is None:
                raise _Fallback
            if last_pts is None and frame.pts > target:  # the seek landed past the frame
                raise _Fallback
            last_pts = frame.pts
            if frame.pts == target:
                _check_frame_size(frame.width, frame.height, max_pixels)
                found[index] = convert(frame_to_rgb(frame, *size))
                break
            if frame.pts > target:  # the decoder never gave that frame
                raise _Fallback
        else:
            raise _Fallback
    return found


def _frames_in_order(container, stream, wanted: list[int], size: tuple[int, int],
                     max_pixels: int, convert: Callable[[np.ndarray], T]) -> dict[int, T]:
    """Frame index i is the i-th frame the decoder returns, decoding from the start."""
    need = set(wanted)
    last = max(need)
    found: dict[int, T] = {}
    for index, frame in enumerate(container.decode(stream)):
        if index in need:
            _check_frame_size(frame.width, frame.height, max_pixels)
            found[index] = convert(frame_to_rgb(frame, *size))
        if index >= last:
            break
    missing = need - found.keys()
    if missing:
        raise InvalidInputError(f"video ended after fewer frames than its {min(missing) + 1} packets "
                                "promised (truncated or corrupt)")
    return found


def _decode(data: bytes, max_seconds: float, max_pixels: int, seek: bool,
            convert: Callable[[np.ndarray], T]) -> tuple[list[list[int]], dict[int, T]]:
    """The clips' frame indices, and ``convert(rgb)`` of each frame they name (decoded once,
    converted as soon as it is decoded so that at most one full-size frame is held)."""
    with _open(data) as container:
        stream = _best_video_stream(container)
        stream_index = stream.index
        fps = _frame_rate(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width > 0 and height > 0:
            _check_frame_size(width, height, max_pixels)
        limit = min(MAX_VIDEO_FRAMES, math.floor(max_seconds * fps) + 1)
        packets = _index_packets(container, stream, limit)
    count = len(packets)
    if count == 0:
        raise InvalidInputError("video has no frames")
    if count > MAX_VIDEO_FRAMES:
        raise InvalidInputError(f"video has over {MAX_VIDEO_FRAMES} frames")
    if count / fps > max_seconds:
        raise InvalidInputError(f"video is over the limit of {max_seconds:g} s")
    clips = select_frame_indices(count, fps)
    wanted = [i for clip in clips for i in clip]
    size = (width, height) if width > 0 and height > 0 else (None, None)

    # PyAV's errors are about the data; ``convert`` and the frame bookkeeping are ours.
    with decoding("cannot decode video", av.FFmpegError):
        try:
            if not seek:
                raise _Fallback
            with _open(data) as container:
                stream = container.streams.video[_video_position(container, stream_index)]
                frames = _frames_by_seeking(container, stream, packets, wanted, size, max_pixels, convert)
        except _Fallback:
            with _open(data) as container:
                stream = container.streams.video[_video_position(container, stream_index)]
                frames = _frames_in_order(container, stream, wanted, size, max_pixels, convert)
    return clips, frames


def _video_position(container, stream_index: int) -> int:
    for position, stream in enumerate(container.streams.video):
        if stream.index == stream_index:
            return position
    raise InvalidInputError("video stream vanished on reopening")


def decode_frames(data: bytes, max_seconds: float = DEFAULT_MAX_VIDEO_SECONDS,
                  max_pixels: int = DEFAULT_MAX_VIDEO_PIXELS, seek: bool = True) -> list[np.ndarray]:
    """Encoded video -> the frames ImageBind uses: 5 clips, each uint8 ``[2, H, W, 3]`` RGB.

    ``seek=False`` decodes from the start instead of seeking: the same frames, slower."""
    clips, frames = _decode(data, max_seconds, max_pixels, seek, convert=lambda rgb: rgb)
    return [np.stack([frames[i] for i in clip]) for clip in clips]


# ---------------------------------------------------------------------------------------------
# Tensor maths (pytorchvideo and ImageBind's own transforms, in their order)
#
# The reference scales a clip's two frames in one ``interpolate`` call on ``[3, 2, H, W]``; each
# (channel, frame) plane is resampled on its own, so scaling frame by frame gives the same bits
# (tested) while only one full-size float frame exists at a time.


def frame_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, 1, H, W]`` in [0, 1] (to float, then ``/ 255``)."""
    pixels = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(1)
    video = torch.empty(pixels.shape, dtype=torch.float32)
    video.copy_(pixels)
    return video.div_(255.0)


def scaled_size(height: int, width: int, size: int = IMAGEBIND_VIDEO_SIZE) -> tuple[int, int]:
    """pytorchvideo's ``short_side_scale`` size: short side -> ``size``, long side ->
    ``floor(long / short * size)`` (float maths; a square counts as landscape)."""
    if width < height:
        return math.floor((float(height) / width) * size), size
    return size, math.floor((float(width) / height) * size)


def scale_short_side(video: torch.Tensor, size: int = IMAGEBIND_VIDEO_SIZE) -> torch.Tensor:
    """``[C, T, H, W]`` float32 -> ``[C, T, H', W']``, bilinear, ``align_corners=False``."""
    _, _, height, width = video.shape
    return torch.nn.functional.interpolate(video, size=scaled_size(height, width, size),
                                           mode="bilinear", align_corners=False)


def normalize_clip(video: torch.Tensor, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """``(x - mean) / std`` per channel of a ``[C, T, H, W]`` clip."""
    mean = torch.as_tensor(mean, dtype=video.dtype)[:, None, None, None]
    std = torch.as_tensor(std, dtype=video.dtype)[:, None, None, None]
    return (video - mean) / std


def crop_offsets(height: int, width: int, size: int = IMAGEBIND_VIDEO_SIZE) -> list[tuple[int, int]]:
    """(top, left) of ImageBind's three crops: start, centre (``ceil``), end of the long side;
    along the width unless the frame is strictly taller than wide."""
    top = math.ceil((height - size) / 2)
    left = math.ceil((width - size) / 2)
    if height > width:
        return [(0, left), (top, left), (height - size, left)]
    return [(top, 0), (top, left), (top, width - size)]


def spatial_crops(video: torch.Tensor, size: int = IMAGEBIND_VIDEO_SIZE) -> list[torch.Tensor]:
    """``[C, T, H, W]`` -> three ``[C, T, size, size]`` views (ImageBind's ``SpatialCrop``)."""
    _, _, height, width = video.shape
    return [video[:, :, top:top + size, left:left + size] for top, left in crop_offsets(height, width, size)]


def scaled_frame(rgb: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, 1, H', W']``, ``/ 255`` and short side scaled to 224."""
    return scale_short_side(frame_to_tensor(rgb))


def crop_clips(clips: list[list[torch.Tensor]]) -> torch.Tensor:
    """Clips of scaled ``[3, 1, H', W']`` frames -> normalised crops ``[clips * 3, 3, T, 224, 224]``."""
    crops = []
    for frames in clips:
        crops.extend(spatial_crops(normalize_clip(torch.cat(frames, dim=1))))
    return torch.stack(crops)


def transform_clips(clips: list[np.ndarray]) -> torch.Tensor:
    """Clips of uint8 ``[T, H, W, 3]`` frames -> float32 ``[clips * 3, 3, T, 224, 224]``."""
    return crop_clips([[scaled_frame(rgb) for rgb in frames] for frames in clips])


def preprocess_video(data: bytes, max_seconds: float = DEFAULT_MAX_VIDEO_SECONDS,
                     max_pixels: int = DEFAULT_MAX_VIDEO_PIXELS) -> torch.Tensor:
    """Encoded video bytes -> ImageBind's vision input, float32 ``[15, 3, 2, 224, 224]``."""
    clips, frames = _decode(data, max_seconds, max_pixels, seek=True, convert=scaled_frame)
    return crop_clips([[frames[i] for i in clip] for clip in clips])
