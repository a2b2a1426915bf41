"""Make tests/data/imagebind_audio_golden.npz: torchaudio's resample and Kaldi fbank, and ImageBind's
whole audio preprocessing, on small fixed signals (stored as int16 beside the outputs).

    python tests/data/make_imagebind_audio_golden.py /path/to/torchaudio /path/to/clip_sampling.py

``/path/to/torchaudio`` is the package folder of an unpacked torchaudio wheel (made with 2.11.0);
its C++ extension is not loaded (it does not load beside torch 2.13): only the pure-Python
``functional.functional`` and ``compliance.kaldi`` modules are imported, under stand-in package
modules. ``clip_sampling.py`` is pytorchvideo's ``pytorchvideo/data/clip_sampling.py`` at the
commit ImageBind pins (6cdc929). The ImageBind steps around them (clip loop, in-place mean
removal, pad/crop to 204 frames, normalisation) are restated below from imagebind/data.py.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def load_torchaudio(package: Path):
    """torchaudio's functional and compliance.kaldi modules, without torchaudio/__init__."""
    root = types.ModuleType("torchaudio")
    root.__path__ = [str(package)]
    extension = types.ModuleType("torchaudio._extension")
    extension._IS_TORCHAUDIO_EXT_AVAILABLE = False
    extension.fail_if_no_align = lambda f: f
    functional = types.ModuleType("torchaudio.functional")
    functional.__path__ = [str(package / "functional")]
    compliance = types.ModuleType("torchaudio.compliance")
    compliance.__path__ = [str(package / "compliance")]
    root.functional, root.compliance = functional, compliance
    sys.modules.update({"torchaudio": root, "torchaudio._extension": extension,
                        "torchaudio.functional": functional, "torchaudio.compliance": compliance})
    import torchaudio.functional.functional as fn
    from torchaudio.compliance import kaldi
    from torchaudio.version import __version__

    return fn.resample, kaldi.fbank, __version__


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def signals() -> dict[str, tuple[np.ndarray, int]]:
    """name -> (int16 [channels, n], sample rate)."""
    rng = np.random.default_rng(20240611)

    def tone(rate, seconds, freq):
        t = np.arange(int(rate * seconds)) / rate
        return np.sin(2 * np.pi * freq * t)

    def chirp(rate, seconds, f0, f1):
        t = np.arange(int(rate * seconds)) / rate
        return np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds)))

    out = {
        # fbank cases, 16 kHz mono
        "fbank_noise": (pcm16(0.3 * rng.standard_normal((1, 4800))), 16000),
        "fbank_chirp": (pcm16(0.8 * chirp(16000, 0.3, 50, 7900))[None], 16000),
        "fbank_quiet": (pcm16(3e-4 * rng.standard_normal((1, 1600))), 16000),  # a few LSBs: log floor region
        "fbank_one_frame": (pcm16(0.5 * rng.uniform(-1, 1, (1, 400))), 16000),
        "fbank_559": (pcm16(0.5 * rng.uniform(-1, 1, (1, 559))), 16000),
        "fbank_560": (pcm16(0.5 * rng.uniform(-1, 1, (1, 560))), 16000),
        "fbank_stereo": (pcm16(0.4 * rng.standard_normal((2, 2000))), 16000),  # channel 0 only
    }
    for rate in (8000, 11025, 22050, 32000, 44100, 48000):
        n = rate // 20
        x = 0.5 * tone(rate, 0.05, 1000) + 0.2 * rng.standard_normal(n)
        out[f"resample_{rate}"] = (pcm16(np.stack([x, 0.3 * rng.standard_normal(n)])), rate)
    # ImageBind end to end: overlapping clips with a DC offset (in-place shift quirk), and a short one.
    n = int(8000 * 2.3)
    left = 0.4 * chirp(8000, 2.3, 100, 3900) + 0.3 + 0.05 * rng.standard_normal(n)
    right = 0.2 * rng.standard_normal(n) - 0.1
    out["imagebind_8k_stereo_2s3"] = (pcm16(np.stack([left, right])), 8000)
    out["imagebind_22k_mono_0s5"] = (pcm16(0.5 * tone(22050, 0.5, 440) + 0.1 * rng.standard_normal(11025))[None], 22050)
    return out


# Frames kept of each end-to-end output (the whole [3, 1, 128, 204] is 313 KB).
E2E_FRAMES = np.arange(0, 204, 8)


def main(torchaudio_dir: str, clip_sampling_py: str) -> None:
    resample, fbank, version = load_torchaudio(Path(torchaudio_dir))
    sampler_module = load_module("pv_clip_sampling", Path(clip_sampling_py))
    kwargs = {"htk_compat": True, "sample_frequency": 16000, "use_energy": False, "window_type": "hanning",
              "num_mel_bins": 128, "dither": 0.0, "frame_length": 25, "frame_shift": 10}

    def imagebind(waveform: torch.Tensor, sr: int) -> torch.Tensor:
        if sr != 16000:
            waveform = resample(waveform, orig_freq=sr, new_freq=16000)
        sampler = sampler_module.ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=3)
        spans, last, end = [], False, 0.0
        while not last:
            start, end, _, _, last = sampler(end, waveform.size(1) / 16000, annotation=None)
            spans.append((start, end))
        clips = []
        for start, end in spans:
            clip = waveform[:, int(start * 16000):int(end * 16000)]
            clip -= clip.mean()
            spec = fbank(clip, **kwargs).transpose(0, 1)
            missing = 204 - spec.size(1)
            spec = torch.nn.functional.pad(spec, (0, missing)) if missing > 0 else spec[:, :204]
            spec = spec.unsqueeze(0)
            mean = torch.as_tensor(-4.268, dtype=spec.dtype)
            std = torch.as_tensor(9.138, dtype=spec.dtype)
            clips.append(spec.clone().sub_(mean).div_(std))  # torchvision Normalize, inplace=False
        return torch.stack(clips)

    arrays = {"e2e_frames": E2E_FRAMES}
    for name, (pcm, rate) in signals().items():
        arrays[f"{name}/pcm"] = pcm
        arrays[f"{name}/rate"] = np.array(rate)
        waveform = torch.from_numpy(pcm.astype(np.float32)) / 32768.0
        if name.startswith("fbank_"):
            arrays[f"{name}/out"] = fbank(waveform, **kwargs).numpy()
        elif name.startswith("resample_"):
            arrays[f"{name}/out"] = resample(waveform, rate, 16000).numpy()
            if rate == 8000:  # and one upsampling away from 16 kHz
                arrays[f"{name}/out_up"] = resample(waveform, rate, 44100).numpy()
        else:
            arrays[f"{name}/out"] = imagebind(waveform, rate)[..., E2E_FRAMES].numpy()
    arrays["torchaudio_version"] = np.array(version)
    arrays["torch_version"] = np.array(torch.__version__)
    target = HERE / "imagebind_audio_golden.npz"
    np.savez_compressed(target, **arrays)
    print(f"wrote {target} ({target.stat().st_size} bytes) with torchaudio {version}, torch {torch.__version__}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
