"""What ImageBind is fed in the benchmark: inputs shaped like what users send, made here from
seeds (and scikit-image's sample photos) and cached on disk under ``cache/imagebind-inputs/``.

- text: the benchmark's captions; image: the benchmark's JPEG photos (0.1-12 MP);
- audio: 10 s of 44.1 kHz stereo 16-bit WAV, a synthetic melody with harmonics, plucked decays,
  a bass line, hi-hat noise and room hiss (a resample to 16 kHz is part of the work);
- video: 10 s 640x360 30 fps H.264 (libx264, yuv420p, CRF 20) MP4, a slow pan and zoom across a
  photo with sensor-like grain on every frame, so that the decoder works as on a phone clip;
- depth: 640x480 16-bit PNG disparity (near = bright) of a box-shaped room with a sphere and a
  box in it, with sensor noise and the missing pixels (0) depth cameras leave at edges;
- thermal: 640x512 8-bit greyscale JPEG (a FLIR Boson's frame size), a blurred photo's luminance
  with warm blobs and noise;
- imu: CSV of 2400 rows at 200 Hz (12 s; the model reads the first 2000), walking-like gyro and
  accelerometer signals (gravity, 1.8 Hz steps, noise), six decimals.
Quick mode makes shorter, smaller audio and video (3 s; 320x180 15 fps): numbers mean nothing there.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import inputs as bench_inputs

VIDEO_SOURCES = ("astronaut", "coffee", "chelsea", "rocket")  # scikit-image photos, as the JPEG set


@dataclass(frozen=True)
class MediaSet:
    description: str  # what one item is, for the report
    items: list  # bytes, or str for text

    @property
    def mean_bytes(self) -> float:
        return float(np.mean([len(x if isinstance(x, bytes) else x.encode()) for x in self.items]))


def _cached(folder: Path, name: str, make) -> bytes:
    path = folder / name
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(make())
        tmp.replace(path)
    return path.read_bytes()


# ---------------------------------------------------------------- audio

def music_wav(seconds: float, rate: int, seed: int) -> bytes:
    """Stereo 16-bit PCM WAV: notes of a pentatonic melody (4 harmonics, plucked decay), a bass
    note per bar, hi-hat bursts and background hiss, panned differently per channel."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    left, right = np.zeros(n), np.zeros(n)
    scale = 220.0 * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14, 16]) / 12)
    start = 0.0
    while start < seconds:  # melody: notes of 0.125-0.5 s
        length = float(rng.choice([0.125, 0.25, 0.25, 0.5]))
        i0, i1 = int(start * rate), min(n, int((start + 1.5 * length) * rate))
        tt = t[i0:i1] - start
        f = float(rng.choice(scale))
        note = sum(np.sin(2 * np.pi * f * k * tt) / k**1.5 for k in range(1, 5)) * np.exp(-tt * 6)
        pan = rng.uniform(0.3, 0.7)
        left[i0:i1] += 0.25 * (1 - pan) * note
        right[i0:i1] += 0.25 * pan * note
        start += length
    for bar in np.arange(0, seconds, 2.0):  # bass: one note per 2 s bar
        i0, i1 = int(bar * rate), min(n, int((bar + 2.0) * rate))
        tt = t[i0:i1] - bar
        bass = np.sin(2 * np.pi * float(rng.choice(scale[:3])) / 2 * tt) * np.exp(-tt * 1.5)
        left[i0:i1] += 0.2 * bass
        right[i0:i1] += 0.2 * bass
    for beat in np.arange(0.25, seconds, 0.5):  # hi-hat: 30 ms noise bursts off the beat
        i0, i1 = int(beat * rate), min(n, int((beat + 0.03) * rate))
        burst = rng.standard_normal(i1 - i0) * np.exp(-np.arange(i1 - i0) / rate * 150)
        left[i0:i1] += 0.06 * burst
        right[i0:i1] += 0.05 * burst
    stereo = np.stack([left, right], axis=1) + 0.003 * rng.standard_normal((n, 2))  # hiss
    stereo *= 0.7 / np.abs(stereo).max()  # peak at -3 dBFS
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((stereo * 32767).round().astype("<i2").tobytes())
    return buf.getvalue()


# ---------------------------------------------------------------- video

def pan_video(source: str, seconds: float, fps: int, width: int, height: int, seed: int) -> bytes:
    """H.264 MP4: a crop window gliding and zooming in across a photo, grain on every frame."""
    import av
    from PIL import Image

    rng = np.random.default_rng(seed)
    photo = bench_inputs._source_image(source, portrait=False)
    # the photo upscaled so the zoomed-in end of the pan still has >= the frame's pixels
    scale = 1.6 * max(width / photo.width, height / photo.height)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
    pw, ph = photo.size
    aspect = width / height
    w0 = min(pw, ph * aspect)  # widest 16:9 window, then 1/1.5 of it at the end
    boxes = [(w0, 0.0, 0.0), (w0 / 1.5, pw - w0 / 1.5, (ph - w0 / 1.5 / aspect))]
    frames = int(seconds * fps)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20", "preset": "medium"}
        for i in range(frames):
            a = i / max(1, frames - 1)
            a = a * a * (3 - 2 * a)  # ease in and out
            (wa, xa, ya), (wb, xb, yb) = boxes
            w = wa + (wb - wa) * a
            x, y = xa + (xb - xa) * a, ya + (yb - ya) * a
            frame = photo.resize((width, height), Image.BILINEAR, box=(x, y, x + w, y + w / aspect))
            pixels = np.asarray(frame).astype(np.int16)
            pixels += rng.normal(0.0, bench_inputs.GRAIN, pixels.shape).round().astype(np.int16)
            rgb = np.clip(pixels, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


# ---------------------------------------------------------------- depth and thermal

def room_disparity_png(width: int, height: int, seed: int) -> bytes:
    """16-bit PNG: disparity (z_near / z, scaled to 65535) seen by a pinhole camera in a room
    (floor, ceiling, walls) holding a sphere and a box; 0.5 % noise, holes at depth edges."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    focal = 0.8 * width
    u = (np.arange(width) - width / 2 + rng.uniform(-20, 20)) / focal
    v = (np.arange(height) - height / 2) / focal
    dx, dy = np.meshgrid(u, v)  # ray direction (dx, dy, 1); y points down
    inf = np.full(dx.shape, np.inf)

    def plane(d, limit):  # distance along z to the plane coordinate = limit
        with np.errstate(divide="ignore", invalid="ignore"):
            z = limit / d
        return np.where(z > 0, z, inf)

    z = np.minimum.reduce([np.full(dx.shape, 5.0 + rng.uniform(-0.5, 0.5)),  # back wall
                           plane(dy, 1.4), plane(dy, -1.2),  # floor, ceiling
                           plane(dx, 2.2), plane(dx, -2.0)])  # side walls
    cx, cy, cz, r = rng.uniform(-0.8, 0.8), 0.6, rng.uniform(2.2, 3.2), 0.5  # a sphere on the floor
    b = dx * cx + dy * cy + cz
    nn = dx**2 + dy**2 + 1
    disc = b * b - nn * (cx * cx + cy * cy + cz * cz - r * r)
    with np.errstate(invalid="ignore"):
        zs = np.where(disc > 0, (b - np.sqrt(np.maximum(disc, 0))) / nn, inf)
    z = np.minimum(z, zs)
    bx, bz = rng.uniform(0.4, 1.2), rng.uniform(1.6, 2.4)  # a box's front face
    front = (np.abs(dx * bz - bx) < 0.35) & (dy * bz > 0.8) & (dy * bz < 1.4)
    z = np.where(front, np.minimum(z, bz), z)
    disparity = 1.0 / z * (1 + 0.005 * rng.standard_normal(z.shape))
    edges = np.abs(np.diff(z, axis=1, prepend=z[:, :1])) > 0.15
    holes = np.roll(edges, 3, axis=1) | edges | (rng.random(z.shape) < 0.002)
    values = np.where(holes, 0, np.clip(disparity, 0, 1) * 65535).round().astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")  # uint16 -> mode I;16
    return buf.getvalue()


def thermal_jpeg(source: str, width: int, height: int, seed: int) -> bytes:
    """8-bit greyscale JPEG: a photo's luminance, blurred as a microbolometer sees, warm blobs, noise."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    photo = bench_inputs._source_image(source, portrait=False).convert("L")
    scale = max(width / photo.width, height / photo.height)
    photo = photo.resize((round(photo.width * scale) + 1, round(photo.height * scale) + 1), Image.BICUBIC)
    grey = np.asarray(photo.crop((0, 0, width, height)).filter(ImageFilter.GaussianBlur(3)), dtype=np.float64)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(3):  # warm bodies
        x0, y0, s = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 60)
        grey += 80 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s))
    grey = 40 + 0.7 * grey + rng.normal(0, 1.5, grey.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(grey, 0, 255).round().astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# ---------------------------------------------------------------- IMU

def walking_imu_csv(rows: int, rate: int, seed: int) -> bytes:
    """gyro x,y,z (rad/s) then accel x,y,z (m/s^2): gravity on y, 1.8 Hz steps, sway, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows) / rate
    step = 2 * np.pi * rng.uniform(1.6, 2.0) * t
    columns = [
        0.3 * np.sin(step / 2) + 0.02 * rng.standard_normal(rows),  # gyro x: sway at stride rate
        0.1 * np.sin(step + 0.5) + 0.02 * rng.standard_normal(rows),
        0.05 * np.sin(0.3 * t) + 0.02 * rng.standard_normal(rows),  # slow turn
        0.8 * np.sin(step / 2 + 1) + 0.1 * rng.standard_normal(rows),
        9.81 + 2.5 * np.maximum(np.sin(step), 0) ** 2 + 0.1 * rng.standard_normal(rows),  # gravity + heel strikes
        1.2 * np.sin(step + 2) + 0.1 * rng.standard_normal(rows),
    ]
    lines = ["gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z"]
    lines += [",".join(f"{c[i]:.6f}" for c in columns) for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


# ---------------------------------------------------------------- the sets

def media(cache: Path, counts: dict[str, int], quick: bool = False) -> dict[str, MediaSet]:
    """``counts[modality]`` items per modality (cycling through the sources), built once and cached."""
    folder = cache / "imagebind-inputs"
    folder.mkdir(parents=True, exist_ok=True)
    audio_s, video_s, fps, vw, vh = (3, 3, 15, 320, 180) if quick else (10, 10, 30, 640, 360)
    photos = bench_inputs.photos(cache, quick)
    captions = bench_inputs.captions(quick)
    sources = VIDEO_SOURCES
    out = {
        "text": MediaSet("caption", [captions[i % len(captions)] for i in range(counts["text"])]),
        "image": MediaSet(f"JPEG photo, {min(p.megapixels for p in photos):.1f}-"
                          f"{max(p.megapixels for p in photos):.0f} MP",
                          [photos[i % len(photos)].data for i in range(counts["image"])]),
        "audio": MediaSet(f"{audio_s} s 44.1 kHz stereo WAV", [
            _cached(folder, f"music_{audio_s}s_44100_s{i}.wav", lambda i=i: music_wav(audio_s, 44100, seed=i))
            for i in range(counts["audio"])]),
        "video": MediaSet(f"{video_s} s {vw}x{vh} {fps} fps H.264 MP4", [
            _cached(folder, f"pan_{sources[i % len(sources)]}_{video_s}s_{vw}x{vh}_{fps}fps_s{i}.mp4",
                    lambda i=i: pan_video(sources[i % len(sources)], video_s, fps, vw, vh, seed=i))
            for i in range(counts["video"])]),
        "depth": MediaSet("640x480 16-bit PNG disparity", [
            _cached(folder, f"room_disparity_640x480_s{i}.png", lambda i=i: room_disparity_png(640, 480, seed=i))
            for i in range(counts["depth"])]),
        "thermal": MediaSet("640x512 8-bit greyscale JPEG", [
            _cached(folder, f"thermal_{sources[i % len(sources)]}_640x512_s{i}.jpg",
                    lambda i=i: thermal_jpeg(sources[i % len(sources)], 640, 512, seed=i))
            for i in range(counts["thermal"])]),
        "imu": MediaSet("CSV, 2400 rows x 6 at 200 Hz", [
            _cached(folder, f"walking_imu_2400_s{i}.csv", lambda i=i: walking_imu_csv(2400, 200, seed=i))
            for i in range(counts["imu"])]),
    }
    return out
