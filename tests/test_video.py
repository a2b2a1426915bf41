"""ImageBind video preprocessing: which frames, scale/normalise/crop maths, decoding, bad input.

Videos are made here with PyAV. Each frame spells its own index in binary as black/white bands
across its short side, so a test can read back WHICH frames were taken and compare them with
ImageBind's rule (pytorchvideo's clip sampler + decord's frame indexing), recomputed here.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from handspring_models.inputs import video
from handspring_models.inputs.image import CLIP_MEAN, CLIP_STD, InvalidInputError
from handspring_models.inputs.video import (
    crop_offsets,
    decode_frames,
    preprocess_video,
    scale_short_side,
    scaled_size,
    select_frame_indices,
    spatial_crops,
    subsample_indices,
    transform_clips,
)

BITS = 9  # up to 512 distinct frame indices


# --- helpers ---------------------------------------------------------------------------------


def index_frame(index: int, width: int, height: int) -> np.ndarray:
    """RGB frame whose bands across the short side spell ``index`` (bit b = band b)."""
    frame = np.zeros((height, width, 3), np.uint8)
    short = min(width, height)
    for bit in range(BITS):
        lo, hi = bit * short // BITS, (bit + 1) * short // BITS
        value = 255 if (index >> bit) & 1 else 0
        if width >= height:
            frame[lo:hi] = value
        else:
            frame[:, lo:hi] = value
    return frame


def read_index(frame: np.ndarray) -> int:
    """Inverse of ``index_frame`` on a decoded (lossy) ``[H, W, 3]`` frame."""
    height, width, _ = frame.shape
    short = min(width, height)
    index = 0
    for bit in range(BITS):
        middle = (bit * short // BITS + (bit + 1) * short // BITS) // 2
        band = frame[middle, :, 0] if width >= height else frame[:, middle, 0]
        index |= int(band.mean() > 127) << bit
    return index


def encode(count: int, fps, width: int, height: int, codec: str = "libx264", container: str = "mp4",
           rotation: int | None = None, frame=index_frame, **options: str) -> bytes:
    """``count`` frames at ``fps`` -> encoded bytes (frame i drawn by ``frame(i, w, h)``)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=Fraction(fps), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(count):
            picture = av.VideoFrame.from_ndarray(frame(i, width, height), format="rgb24")
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def reference_indices(count: int, fps: float) -> list[list[int]]:
    """ImageBind's frames, written out independently: duration n / fps; clip k starts at
    k * max(D - 2, 0) / 4 (5 clips, the sampler divides by clips - 1); decord's reader takes
    frames ceil(fps * start) .. min(ceil(fps * end), n) - 1; the subsampler keeps both ends."""
    duration = count / fps
    step = max(duration - 2.0, 0) / 4
    picks = []
    for k in range(5):
        start = k * step
        first = math.ceil(fps * start)
        last = min(math.ceil(fps * (start + 2)), count) - 1
        picks.append([first, last])
    return picks


def reference_transform(frames: np.ndarray) -> torch.Tensor:
    """One clip through pytorchvideo/ImageBind's ops, spelled out with torch directly."""
    clip = torch.from_numpy(frames).float().permute(3, 0, 1, 2).contiguous() / 255.0
    _, _, height, width = clip.shape
    if width < height:
        size = (math.floor(height / width * 224), 224)
    else:
        size = (224, math.floor(width / height * 224))
    clip = F.interpolate(clip, size=size, mode="bilinear", align_corners=False)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1, 1)
    return (clip - mean) / std


# --- which frames ----------------------------------------------------------------------------


def test_subsample_keeps_first_and_last():
    assert subsample_indices(60, 2) == [0, 59]
    assert subsample_indices(1, 2) == [0, 0]


def test_subsample_matches_truncated_float_linspace():
    assert subsample_indices(10, 4) == [0, 3, 6, 9]
    assert subsample_indices(7, 5) == [0, 1, 3, 4, 6]


@pytest.mark.parametrize("count, fps, expected", [
    (5, 10.0, [[0, 4]] * 5),                                      # 0.5 s: five copies of the whole
    (20, 10.0, [[0, 19]] * 5),                                    # exactly one clip long
    (37, 10.0, [[0, 19], [5, 24], [9, 28], [13, 32], [17, 36]]),  # 3.7 s; the last clip ends at n
    (111, 30000 / 1001, [[0, 59], [13, 72], [26, 85], [39, 98], [52, 110]]),
    (120, 10.0, [[0, 19], [25, 44], [50, 69], [75, 94], [100, 119]]),
])
def test_select_frame_indices_known_cases(count, fps, expected):
    assert select_frame_indices(count, fps) == expected


@pytest.mark.parametrize("fps", [10.0, 24000 / 1001, 25.0, 30000 / 1001, 60.0, 12.5])
def test_select_frame_indices_matches_the_rule_over_many_lengths(fps):
    for count in range(1, 800, 7):
        assert select_frame_indices(count, fps) == reference_indices(count, fps), count


def test_select_frame_indices_refuses_an_empty_clip():
    # 3 frames at 0.2 fps: the last clip starts at 13 s, ceil(2.6) = 3 = n, no frame left in it.
    with pytest.raises(InvalidInputError, match="frame rate"):
        select_frame_indices(3, 0.2)


# --- scale, normalise, crop ------------------------------------------------------------------


@pytest.mark.parametrize("height, width, expected", [
    (64, 96, (224, 336)),
    (96, 64, (336, 224)),
    (80, 80, (224, 224)),
    (1080, 1920, (224, 398)),
    (30, 50, (224, 373)),       # smaller than 224: scaled up
    (56, 61, (224, 243)),       # float floor: 61 / 56 * 224 is 243.99999999999997, not 244
])
def test_scaled_size(height, width, expected):
    assert scaled_size(height, width) == expected


@pytest.mark.parametrize("height, width", [(64, 96), (97, 61), (300, 300), (40, 30)])
def test_scale_short_side_is_plain_bilinear_interpolate(height, width):
    clip = torch.rand(3, 2, height, width, generator=torch.Generator().manual_seed(height))
    expected = F.interpolate(clip, size=scaled_size(height, width), mode="bilinear", align_corners=False)
    assert torch.equal(scale_short_side(clip), expected)


@pytest.mark.parametrize("height, width, expected", [
    (224, 336, [(0, 0), (0, 56), (0, 112)]),      # landscape: left, centre, right
    (336, 224, [(0, 0), (56, 0), (112, 0)]),      # portrait: top, centre, bottom
    (224, 224, [(0, 0), (0, 0), (0, 0)]),
    (224, 373, [(0, 0), (0, 75), (0, 149)]),      # centre offset rounds up: ceil(149 / 2)
])
def test_crop_offsets(height, width, expected):
    assert crop_offsets(height, width) == expected


def test_spatial_crops_are_the_offset_slices():
    clip = torch.arange(3 * 2 * 224 * 373, dtype=torch.float32).view(3, 2, 224, 373)
    crops = spatial_crops(clip)
    assert [tuple(c.shape) for c in crops] == [(3, 2, 224, 224)] * 3
    for crop, left in zip(crops, (0, 75, 149)):
        assert torch.equal(crop, clip[:, :, :, left:left + 224])


def test_transform_clips_matches_the_ops_spelled_out():
    # Bit for bit, although we scale frame by frame and the reference scales [3, 2, H, W] at once.
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (2, 90, 160, 3), dtype=np.uint8) for _ in range(5)]
    out = transform_clips(clips)
    assert out.shape == (15, 3, 2, 224, 224) and out.dtype == torch.float32
    for k, frames in enumerate(clips):
        full = reference_transform(frames)  # [3, 2, 224, 398]
        for j, left in enumerate((0, 87, 174)):
            assert torch.equal(out[3 * k + j], full[..., left:left + 224])


# --- decoding: which frames come out ---------------------------------------------------------


VIDEOS = {  # name: (frames, fps, width, height, codec, container, encoder options)
    "0.5s_mp4_h264_landscape": (5, 10, 96, 64, "libx264", "mp4", {}),
    "2s_webm_vp9_portrait": (50, 25, 64, 96, "libvpx-vp9", "webm",
                             {"g": "20", "deadline": "realtime", "cpu-used": "8"}),
    "3.7s_avi_mpeg4_square": (37, 10, 80, 80, "mpeg4", "avi", {"qscale": "2", "g": "12"}),
    "12s_mp4_h264_ntsc_bframes": (360, Fraction(30000, 1001), 96, 64, "libx264", "mp4", {"g": "30", "bf": "2"}),
    "12s_mkv_mpeg4_tiny": (300, 25, 50, 30, "mpeg4", "matroska", {"qscale": "2", "g": "25"}),
}


@pytest.fixture(scope="module", params=sorted(VIDEOS))
def sample(request):
    count, fps, width, height, codec, container, options = VIDEOS[request.param]
    return {"data": encode(count, fps, width, height, codec, container, **options),
            "count": count, "fps": float(fps), "width": width, "height": height}


def test_decoded_frames_are_the_reference_frames(sample):
    clips = decode_frames(sample["data"])
    assert [[read_index(f) for f in clip] for clip in clips] == reference_indices(sample["count"], sample["fps"])
    assert all(clip.shape == (2, sample["height"], sample["width"], 3) and clip.dtype == np.uint8 for clip in clips)


def test_seeking_gives_the_frames_of_decoding_through(sample):
    seeking = decode_frames(sample["data"])
    through = decode_frames(sample["data"], seek=False)
    assert all(np.array_equal(a, b) for a, b in zip(seeking, through))


def test_ordinary_files_are_read_by_seeking(sample, monkeypatch):
    def decode_through(*args, **kwargs):
        raise AssertionError("fell back to decoding from the start")
    monkeypatch.setattr(video, "_frames_in_order", decode_through)
    assert len(decode_frames(sample["data"])) == 5


def test_preprocess_video_is_decode_then_transform(sample):
    out = preprocess_video(sample["data"])
    assert out.shape == (15, 3, 2, 224, 224) and out.dtype == torch.float32
    assert torch.equal(out, transform_clips(decode_frames(sample["data"])))


def test_frames_match_pyav_decoding_in_presentation_order():
    data = encode(60, 30, 96, 64, "libx264", "mp4", bf="3", g="10")
    with av.open(io.BytesIO(data)) as container:
        every = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    clips = decode_frames(data)
    for clip, (first, last) in zip(clips, reference_indices(60, 30.0)):
        assert np.array_equal(clip[0], every[first]) and np.array_equal(clip[1], every[last])


def corner_mark(i: int, width: int, height: int) -> np.ndarray:
    frame = np.zeros((height, width, 3), np.uint8)
    frame[: height // 4, : width // 4] = 255  # top-left only
    return frame


@pytest.mark.parametrize("rotation, turns", [(90, 1), (-90, 3), (180, 2)])
def test_display_rotation_is_applied_like_decord(rotation, turns):
    # decord turns frames upright: 90 degrees counter-clockwise in the display matrix -> rot90 once.
    plain = decode_frames(encode(20, 10, 96, 64, "libx264", "mp4", frame=corner_mark))
    turned = decode_frames(encode(20, 10, 96, 64, "libx264", "mp4", frame=corner_mark, rotation=rotation))
    assert turned[0].shape == ((2, 96, 64, 3) if turns % 2 else (2, 64, 96, 3))
    assert np.array_equal(turned[0][0], np.rot90(plain[0][0], turns))


def test_rotated_mark_lands_where_a_player_shows_it():
    # Counter-clockwise quarter turn: the top-left corner ends up bottom-left.
    clip = decode_frames(encode(20, 10, 96, 64, "libx264", "mp4", frame=corner_mark, rotation=90))[0][0]
    assert clip[-10:, :10].mean() > 200 and clip[:10, :10].mean() < 50


def test_portrait_output_crops_run_top_to_bottom():
    def marked(i, width, height):  # bright top third, dark bottom third
        frame = np.full((height, width, 3), 128, np.uint8)
        frame[: height // 3] = 255
        frame[-(height // 3):] = 0
        return frame
    out = preprocess_video(encode(10, 10, 64, 192, "libx264", "mp4", frame=marked))
    top, centre, bottom = out[0], out[1], out[2]
    assert top.mean() > centre.mean() > bottom.mean()


# --- bad input -------------------------------------------------------------------------------


def wav_bytes() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize("data, message", [
    (b"", "format"),
    (np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "format"),
    (b"hello video" * 100, "format"),
])
def test_garbage_is_refused(data, message):
    with pytest.raises(InvalidInputError, match=message):
        preprocess_video(data)


def test_audio_only_file_is_refused():
    with pytest.raises(InvalidInputError, match="no video stream"):
        preprocess_video(wav_bytes())


def test_truncated_mp4_is_refused():
    data = encode(30, 10, 96, 64, "libx264", "mp4")  # moov written at the end: cut, it is gone
    with pytest.raises(InvalidInputError):
        preprocess_video(data[: len(data) // 2])


def test_duration_limit():
    data = encode(30, 10, 96, 64, "libx264", "mp4")
    with pytest.raises(InvalidInputError, match="limit of 2 s"):
        preprocess_video(data, max_seconds=2)
    assert preprocess_video(data, max_seconds=3).shape == (15, 3, 2, 224, 224)


def test_pixel_limit():
    data = encode(5, 10, 96, 64, "libx264", "mp4")
    with pytest.raises(InvalidInputError, match="over the limit of 6000"):
        preprocess_video(data, max_pixels=6000)


def test_extreme_aspect_ratio_is_refused():
    data = encode(5, 10, 340, 20, "libx264", "mp4")
    with pytest.raises(InvalidInputError, match="aspect ratio"):
        preprocess_video(data)


def test_invalid_input_error_is_a_value_error():
    assert issubclass(InvalidInputError, ValueError)
    assert video.InvalidInputError is InvalidInputError
