"""The fuzzer's seed corpus: small valid files of every format a modality takes, made here."""

from __future__ import annotations

import io

import av
import numpy as np
from PIL import Image

from tests import media


def _image(mode: str, size=(24, 16)) -> Image.Image:
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    return rgb.convert(mode)


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def images() -> list[bytes]:
    rgb = _image("RGB")
    frames = [rgb, rgb.rotate(90), rgb.transpose(Image.FLIP_LEFT_RIGHT)]
    return [
        _save(rgb, "PNG"), _save(_image("RGBA"), "PNG"), _save(_image("P"), "PNG"),
        _save(rgb, "JPEG", quality=80), _save(rgb, "JPEG", progressive=True),
        _save(_image("CMYK"), "JPEG"),
        _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        _save(rgb, "PNG", save_all=True, append_images=frames[1:]),  # APNG
        _save(rgb, "WEBP", quality=60), _save(rgb, "WEBP", lossless=True),
        _save(rgb, "TIFF"), _save(rgb, "TIFF", compression="tiff_lzw"),
        _save(rgb, "BMP"), _save(_image("L"), "PNG"),
    ]


def grey_images() -> list[bytes]:
    """Depth and thermal: 16-bit and 8-bit greyscale maps."""
    ramp = np.linspace(0, 65535, 24 * 16).reshape(16, 24).astype(np.uint16)
    sixteen = Image.fromarray(ramp)
    return [
        _save(sixteen, "PNG"), _save(sixteen, "TIFF"), _save(_image("L"), "PNG"),
        _save(_image("L"), "JPEG"), _save(_image("RGB"), "PNG"),
    ]


def _audio(container: str, codec: str, rate: int, layout: str = "mono", fmt: str = "s16",
           seconds: float = 0.3) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    channels = 2 if layout == "stereo" else 1
    wave = np.repeat((0.4 * np.sin(2 * np.pi * 330 * t))[None], channels, axis=0)  # [channels, n]
    samples = (wave * 32767).astype(np.int16) if fmt.startswith("s16") else wave.astype(np.float32)
    planar = av.AudioFormat(fmt).is_planar
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        step = stream.codec_context.frame_size or 1024
        for start in range(0, samples.shape[1], step):
            chunk = samples[:, start:start + step]
            chunk = chunk if planar else chunk.T.reshape(1, -1)  # packed: one interleaved row
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def audio() -> list[bytes]:
    return [
        media.wav(0.3), media.wav(0.2, rate=44100, channels=2),
        _audio("flac", "flac", 16000), _audio("mp3", "libmp3lame", 22050, fmt="s16p"),
        _audio("ogg", "libopus", 48000, fmt="flt"),
        _audio("ipod", "aac", 16000, fmt="fltp"),
    ]


def _video(container: str, codec: str, seconds: float = 1.0, fps: int = 5, width: int = 32, height: int = 24,
           pix_fmt: str = "yuv420p") -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(int(seconds * fps)):
            rgb = np.full((height, width, 3), (40 * i) % 256, np.uint8)
            rgb[:, : width // 2, 1] = 255 - (40 * i) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def webm(seconds: float = 2.0) -> bytes:
    return _video("webm", "libvpx", seconds=seconds)


def videos() -> list[bytes]:
    return [
        _video("mp4", "mpeg4"), webm(1.0), _video("matroska", "libx264"),
        _video("avi", "mjpeg", pix_fmt="yuvj420p"), media.video(1.0, fps=5, width=32, height=24),
    ]


def imu() -> list[bytes]:
    return [
        media.imu_csv(20),
        b"\xef\xbb\xbfgyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z\r\n1,2,3,4,5,6\r\n\r\n-1e3, 0.5 ,7,8,9,1e-9\r\n",
        b"0,1,2,3,4,5\n" + b"0.1,0.2,0.3,0.4,0.5,0.6\n" * 5,
    ]


SEEDS = {"image": images, "depth": grey_images, "thermal": grey_images, "audio": audio, "video": videos, "imu": imu}
