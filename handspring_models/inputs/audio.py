"""Audio decoding and ImageBind's audio preprocessing, without torchaudio.

ImageBind's pipeline (``imagebind/data.py``, ``load_and_transform_audio_data``), reproduced here:

1. decode to float32 ``[channels, n]`` the way ``torchaudio.load`` normalises (PCM16 / 32768...);
2. resample to 16 kHz with torchaudio's default windowed-sinc filter (Hann window, 6 zero
   crossings, roll-off 0.99) if the rate differs;
3. three 2 s clips placed by pytorchvideo's ``ConstantClipsPerVideoSampler`` (``timeline``);
4. per clip, in order: ``clip -= clip.mean()`` *in place on a view of the shared waveform* (so
   later, overlapping clips see samples already shifted by earlier clips; the mean is over all
   channels), then a Kaldi fbank of channel 0 (128 mel bins, 25 ms Hann frames every 10 ms,
   torchaudio's ``compliance.kaldi.fbank`` options);
5. ``[128, frames]``, zero-padded or cropped to 204 frames, normalised with (-4.268, 9.138).

The float32 arithmetic follows torchaudio's operation order so that results agree to the bit
with torchaudio on the same torch build (tests/data has golden tensors made with torchaudio).
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
import torch

from ..errors import InvalidInputError, decoded, decoding
from .timeline import clip_spans

IMAGEBIND_SAMPLE_RATE = 16_000
IMAGEBIND_CLIP_SECONDS = 2
IMAGEBIND_CLIPS = 3
IMAGEBIND_MEL_BINS = 128
IMAGEBIND_TARGET_FRAMES = 204
IMAGEBIND_AUDIO_MEAN = -4.268
IMAGEBIND_AUDIO_STD = 9.138

# Limits on what a client may send. The whole recording is decoded and resampled (the clips are
# spread over all of it), so duration, channels and rate bound both memory and time.
DEFAULT_MAX_AUDIO_SECONDS = 600.0
MAX_AUDIO_CHANNELS = 8
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
# Decoded samples over all channels (float32): 2**26 is 256 MiB, e.g. 10 min of 48 kHz stereo.
MAX_AUDIO_SAMPLES = 2**26
# Entries of the resampling filter bank ([new, 1, taps] after dividing both rates by their gcd).
# Common rates need at most ~0.3 M (11025 Hz); odd ones such as 44056 Hz would need tens of
# millions (and as many multiply-adds per output sample), so they are refused.
MAX_RESAMPLE_KERNEL = 2_000_000

# Kaldi's frame geometry as ImageBind sets it.
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0


# ---------------------------------------------------------------------------------------------
# Decoding


def _to_float(samples: np.ndarray) -> np.ndarray:
    """Native sample array -> float32 in [-1, 1), scaled as torchaudio/FFmpeg scale each type.

    Scales are powers of two, so int16 and uint8 convert exactly; int32 rounds once (to float32)
    exactly as FFmpeg's s32 -> float conversion does.
    """
    kind = samples.dtype
    if kind == np.int16:
        return samples.astype(np.float32) / np.float32(32768.0)
    if kind == np.int32:
        return samples.astype(np.float32) / np.float32(2.0**31)
    if kind == np.uint8:
        return (samples.astype(np.float32) - np.float32(128.0)) / np.float32(128.0)
    if kind == np.int64:
        return (samples.astype(np.float64) / 2.0**63).astype(np.float32)
    if kind == np.float32:
        return samples
    if kind == np.float64:
        return samples.astype(np.float32)
    raise InvalidInputError(f"unsupported audio sample type {kind}")


def _frame_channels(frame) -> np.ndarray:
    """A decoded PyAV audio frame -> native-typed array ``[channels, samples]``."""
    array = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        return array.reshape(channels, -1)
    # Packed formats come as one interleaved row.
    return array.reshape(-1, channels).T


def decode_audio(data: bytes, max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS) -> tuple[torch.Tensor, int]:
    """Decode any FFmpeg-readable audio (WAV, FLAC, MP3, OGG, M4A...) from bytes.

    Returns ``(waveform, sample_rate)``, waveform float32 ``[channels, n]`` (contiguous), scaled
    like ``torchaudio.load``. The best audio stream is read; anything unusable raises
    ``InvalidInputError``. Decoding stops as soon as the duration cap is passed.
    """
    if not data:
        raise InvalidInputError("audio is empty")
    import av  # deferred: only audio and video need FFmpeg

    with decoding("not an audio file we can decode"):
        container = av.open(io.BytesIO(data), mode="r")
    try:
        return _decode_container(container, max_seconds)
    finally:
        container.close()


def _decode_container(container, max_seconds: float) -> tuple[torch.Tensor, int]:
    with decoding("cannot decode audio"):
        streams = container.streams.audio
        stream = (container.streams.best("audio") or streams[0]) if streams else None
        codec = stream.codec_context if stream is not None else None
    if stream is None:
        raise InvalidInputError("no audio stream in the file")
    if codec is None:
        raise InvalidInputError("no decoder for this audio stream's codec")
    if codec.channels > MAX_AUDIO_CHANNELS:  # early refusal, before any decoding
        raise InvalidInputError(f"audio has {codec.channels} channels, "
                                f"over the limit of {MAX_AUDIO_CHANNELS}")

    # Rate and channels are taken from the decoded frames (headers can understate them, e.g.
    # HE-AAC) and must then stay the same.
    sample_rate = channels = max_frames = 0
    chunks: list[np.ndarray] = []
    count = 0
    for frame in decoded(container.decode(stream), "cannot decode audio"):
        with decoding("cannot decode audio"):
            block = _frame_channels(frame)
        if not chunks:
            sample_rate, channels = frame.sample_rate, block.shape[0]
            _check_rate(sample_rate)
            if not 1 <= channels <= MAX_AUDIO_CHANNELS:
                raise InvalidInputError(f"audio has {channels} channels (allowed 1..{MAX_AUDIO_CHANNELS})")
            max_frames = int(max_seconds * sample_rate)
        elif frame.sample_rate != sample_rate or block.shape[0] != channels:
            raise InvalidInputError("audio changes sample rate or channel count mid-stream")
        count += block.shape[1]
        if count > max_frames or count * channels > MAX_AUDIO_SAMPLES:
            raise InvalidInputError(_too_long(max_seconds, sample_rate, channels))
        chunks.append(block)
    if count == 0:
        raise InvalidInputError("audio has no samples")
    if any(chunk.dtype != chunks[0].dtype for chunk in chunks):
        chunks = [_to_float(chunk) for chunk in chunks]  # keep each block's own scale
    samples = _to_float(np.concatenate(chunks, axis=1))
    waveform = torch.from_numpy(np.ascontiguousarray(samples))
    if not bool(torch.isfinite(waveform).all()):
        raise InvalidInputError("audio contains NaN or infinite samples")
    return waveform, sample_rate


def _too_long(max_seconds: float, sample_rate: int, channels: int) -> str:
    if int(max_seconds * sample_rate) * channels > MAX_AUDIO_SAMPLES:
        return f"audio is longer than {MAX_AUDIO_SAMPLES // channels / sample_rate:.0f} s at {sample_rate} Hz x {channels} channels"
    return f"audio is longer than the limit of {max_seconds:g} s"


def _check_rate(sample_rate: int) -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise InvalidInputError(f"audio sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")


# ---------------------------------------------------------------------------------------------
# Resampling (torchaudio.functional.resample, method "sinc_interp_hann")


def _reduced_rates(orig_freq: int, new_freq: int) -> tuple[int, int]:
    """Both rates divided by their gcd: the filter bank's period in input and output samples."""
    gcd = math.gcd(int(orig_freq), int(new_freq))
    return int(orig_freq) // gcd, int(new_freq) // gcd


def _filter_pad(orig: int, new: int, zero_crossings: int, rolloff: float) -> int:
    """Input samples each side of a phase that its filter reaches (reduced rates)."""
    return math.ceil(zero_crossings * orig / (min(orig, new) * rolloff))


@functools.lru_cache(maxsize=4)
def _sinc_filter_bank(orig: int, new: int, zero_crossings: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """Polyphase filters for rates already divided by their gcd: ``([new, 1, taps], pad)``.

    Output phase j (time j/new) takes input samples around it; tap k of the filter sits at
    input index k - pad relative to the phase's block. Filter = ideal low-pass at
    ``min(orig, new) * rolloff`` (sinc), Hann-windowed over ``zero_crossings`` lobes each side.
    The float32 operation order is torchaudio's, for identical results.
    """
    cutoff = min(orig, new) * rolloff
    pad = _filter_pad(orig, new, zero_crossings, rolloff)
    tap_times = torch.arange(-pad, pad + orig, dtype=torch.float32)[None, None] / orig
    phase_times = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new
    # Distance from each output phase to each tap, in cycles of the cutoff, limited to the window.
    x = (phase_times + tap_times) * cutoff
    x = x.clamp(-zero_crossings, zero_crossings)
    window = torch.cos(x * math.pi / zero_crossings / 2) ** 2
    x = x * math.pi
    sinc = torch.where(x == 0, torch.tensor(1.0), x.sin() / x)
    return sinc * (window * (cutoff / orig)), pad


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int, zero_crossings: int = 6,
             rolloff: float = 0.99) -> torch.Tensor:
    """Band-limited resampling of float32 ``[..., n]`` to ``[..., ceil(n * new / orig)]``.

    Matches ``torchaudio.functional.resample`` with its defaults (including returning the input
    itself when the rates are equal, and its float32 rounding of the output length).
    """
    if orig_freq <= 0 or new_freq <= 0 or int(orig_freq) != orig_freq or int(new_freq) != new_freq:
        raise ValueError(f"sample rates must be positive integers, got {orig_freq} and {new_freq}")
    if orig_freq == new_freq:
        return waveform
    orig, new = _reduced_rates(orig_freq, new_freq)
    if new * (orig + 2 * _filter_pad(orig, new, zero_crossings, rolloff)) > MAX_RESAMPLE_KERNEL:
        raise InvalidInputError(f"cannot resample {orig_freq} Hz to {new_freq} Hz: the rate ratio {orig}/{new} is too awkward")
    bank, pad = _sinc_filter_bank(orig, new, zero_crossings, rolloff)

    shape = waveform.shape
    rows = waveform.reshape(-1, shape[-1])
    length = rows.shape[1]
    # Each output block of `new` samples comes from one stride of `orig` input samples.
    padded = torch.nn.functional.pad(rows, (pad, pad + orig))
    blocks = torch.nn.functional.conv1d(padded[:, None], bank, stride=orig)  # [rows, new, blocks]
    out = blocks.transpose(1, 2).reshape(rows.shape[0], -1)
    out = out[:, :resampled_length(length, orig_freq, new_freq)]
    return out.view(*shape[:-1], out.shape[-1])


def resampled_length(length: int, orig_freq: int, new_freq: int) -> int:
    """Output length of ``resample``: ceil(length * new / orig) as torchaudio computes it.

    torchaudio rounds the quotient to float32 before the ceil, which drops a sample on long
    inputs (48 kHz, 3 * 2**23 + 1 samples -> 2**23, not 2**23 + 1); kept for fidelity.
    """
    if orig_freq == new_freq:
        return length
    orig, new = _reduced_rates(orig_freq, new_freq)
    return int(torch.ceil(torch.as_tensor(new * length / orig)))


# ---------------------------------------------------------------------------------------------
# Kaldi fbank (torchaudio.compliance.kaldi.fbank as ImageBind calls it)


def _mel(freq):
    return 1127.0 * (1.0 + freq / 700.0).log() if isinstance(freq, torch.Tensor) else 1127.0 * math.log(1.0 + freq / 700.0)


@functools.lru_cache(maxsize=4)
def kaldi_mel_banks(num_bins: int, fft_size: int, sample_rate: float, low_freq: float, high_freq: float) -> torch.Tensor:
    """Kaldi's triangular mel filters over the FFT bins: float32 ``[num_bins, fft_size // 2 + 1]``.

    Triangles are equally spaced on the mel scale 1127 ln(1 + f/700) between ``low_freq`` and
    ``high_freq`` (<= 0 means Nyquist minus that); the Nyquist bin gets no weight.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"bad mel range {low_freq}..{high_freq} Hz for Nyquist {nyquist} Hz")
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    step = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins)[:, None]
    left = mel_low + index * step
    centre = mel_low + (index + 1.0) * step
    right = mel_low + (index + 2.0) * step
    bin_mel = _mel((sample_rate / fft_size) * torch.arange(float(fft_size // 2)))[None]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    banks = torch.max(torch.zeros(1), torch.min(rising, falling))
    return torch.nn.functional.pad(banks, (0, 1))


@functools.lru_cache(maxsize=4)
def _hann(size: int) -> torch.Tensor:
    return torch.hann_window(size, periodic=False)  # Kaldi's "hanning": symmetric, zero at both ends


def kaldi_fbank(waveform: torch.Tensor, sample_rate: int = IMAGEBIND_SAMPLE_RATE,
                num_mel_bins: int = IMAGEBIND_MEL_BINS, frame_length_ms: float = FRAME_LENGTH_MS,
                frame_shift_ms: float = FRAME_SHIFT_MS, preemphasis: float = 0.97,
                low_freq: float = 20.0, high_freq: float = 0.0) -> torch.Tensor:
    """Log mel filterbank of channel 0 of float32 ``[channels, n]`` (or ``[n]``): ``[frames, bins]``.

    Kaldi ``compute-fbank-feats`` semantics with torchaudio's ImageBind options: no dither,
    per-frame DC removal, pre-emphasis, Hann window, FFT size rounded up to a power of two,
    power spectrum, frames that fit entirely (snip_edges), log floored at float32 epsilon.
    """
    signal = waveform[0] if waveform.dim() == 2 else waveform
    # Same float expressions as torchaudio (sample_rate * ms * 0.001), so the same integers.
    frame_length = int(sample_rate * frame_length_ms * 0.001)
    frame_shift = int(sample_rate * frame_shift_ms * 0.001)
    if frame_length < 2 or frame_shift < 1:
        raise ValueError("frame length must be >= 2 samples and shift >= 1")
    if signal.shape[0] < frame_length:
        raise InvalidInputError(f"audio clip has {signal.shape[0]} samples, fewer than one {frame_length}-sample frame")
    fft_size = 1 << (frame_length - 1).bit_length()

    frames = signal.unfold(0, frame_length, frame_shift)  # [m, frame_length], a strided view
    frames = frames - frames.mean(dim=1).unsqueeze(1)
    previous = torch.cat((frames[:, :1], frames[:, :-1]), dim=1)  # x[-1] := x[0], as Kaldi
    frames = frames - preemphasis * previous
    frames = frames * _hann(frame_length)[None]
    frames = torch.nn.functional.pad(frames, (0, fft_size - frame_length))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = kaldi_mel_banks(num_mel_bins, fft_size, float(sample_rate), low_freq, high_freq)
    energies = torch.mm(power, banks.T)
    return torch.max(energies, torch.tensor(torch.finfo(torch.float32).eps)).log()


# ---------------------------------------------------------------------------------------------
# ImageBind clips


def audio_clips(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """ImageBind's audio input from a decoded waveform: float32 ``[3, 1, 128, 204]``.

    ``waveform`` is float32 ``[channels, n]`` at ``sample_rate``; it is not modified.
    """
    if waveform.dim() != 2 or waveform.shape[0] < 1 or waveform.shape[1] < 1:
        raise InvalidInputError(f"audio must be [channels, samples], got shape {tuple(waveform.shape)}")
    _check_rate(sample_rate)
    rate = IMAGEBIND_SAMPLE_RATE
    if sample_rate != rate:
        working = resample(waveform, sample_rate, rate)
    else:
        working = waveform.clone()  # the clips shift it in place; the caller's tensor stays intact
    frame_length = int(rate * FRAME_LENGTH_MS * 0.001)
    if working.shape[1] < frame_length:
        raise InvalidInputError(f"audio is too short: {working.shape[1] / rate * 1000:.1f} ms, "
                                f"need at least {FRAME_LENGTH_MS:g} ms")

    mean = torch.as_tensor(IMAGEBIND_AUDIO_MEAN, dtype=torch.float32)
    std = torch.as_tensor(IMAGEBIND_AUDIO_STD, dtype=torch.float32)
    clips = []
    for start, end in clip_spans(working.shape[1] / rate, IMAGEBIND_CLIP_SECONDS, IMAGEBIND_CLIPS):
        clip = working[:, int(start * rate):int(end * rate)]  # a view: the shift below is shared
        clip -= clip.mean()
        spectrum = kaldi_fbank(clip, rate).transpose(0, 1)  # [bins, frames]
        missing = IMAGEBIND_TARGET_FRAMES - spectrum.shape[1]
        if missing > 0:
            spectrum = torch.nn.functional.pad(spectrum, (0, missing))
        else:
            spectrum = spectrum[:, :IMAGEBIND_TARGET_FRAMES]
        clips.append(spectrum.unsqueeze(0).sub_(mean).div_(std))
    out = torch.stack(clips)
    if not bool(torch.isfinite(out).all()):  # float files can hold huge values; power overflows
        raise InvalidInputError("audio samples are too large (features overflow float32)")
    return out


def preprocess_audio(data: bytes, max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS) -> torch.Tensor:
    """Encoded audio bytes -> ImageBind's float32 ``[3, 1, 128, 204]``."""
    waveform, sample_rate = decode_audio(data, max_seconds)
    return audio_clips(waveform, sample_rate)
