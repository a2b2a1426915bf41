"""Small media files made in the tests: audio, video, depth/thermal images and IMU CSV."""

from __future__ import annotations

import io
import wave

import numpy as np
from PIL import Image


def wav(seconds: float = 1.0, rate: int = 16000, freq: float = 440.0, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    pcm = (np.clip(signal, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm[:, None], channels, axis=1).tobytes())
    return buf.getvalue()


def video(seconds: float = 2.5, fps: int = 10, width: int = 96, height: int = 64) -> bytes:
    """An MP4 (MPEG-4 part 2) whose frames get brighter over time."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frames = int(seconds * fps)
        for i in range(frames):
            level = int(255 * i / max(1, frames - 1))
            rgb = np.full((height, width, 3), level, np.uint8)
            rgb[:, : width // 3, 0] = 255 - level  # some structure, so crops differ
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def gray_png(width: int = 120, height: int = 90, mode: str = "L") -> bytes:
    ramp = np.linspace(0, 255 if mode == "L" else 65535, width * height).reshape(height, width)
    image = Image.fromarray(ramp.astype(np.uint8 if mode == "L" else np.uint16))  # uint16 -> mode I;16
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def imu_csv(rows: int = 500) -> bytes:
    t = np.arange(rows) / 100
    columns = [np.sin(t * (k + 1)) for k in range(6)]
    lines = ["gyro_x,gyro_y,gyro_z,accel_x,accel_y,accel_z"]
    lines += [",".join(f"{c[i]:.6f}" for c in columns) for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()
