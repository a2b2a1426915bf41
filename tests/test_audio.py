"""ImageBind audio preprocessing: clip placement, resampling, Kaldi fbank, decoding, end to end.

Fidelity is pinned two ways: golden tensors made with torchaudio 2.11 itself
(tests/data/imagebind_audio_golden.npz, see tests/data/README.md) and kaldi-native-fbank, an
independent Kaldi-compatible implementation.
"""

from __future__ import annotations

import io
import math
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from handspring_models.inputs import audio
from handspring_models.inputs.audio import (
    IMAGEBIND_AUDIO_MEAN,
    IMAGEBIND_AUDIO_STD,
    audio_clips,
    decode_audio,
    kaldi_fbank,
    preprocess_audio,
    resample,
    resampled_length,
)
from handspring_models.inputs.image import InvalidInputError
from handspring_models.inputs.timeline import clip_spans

GOLDEN = Path(__file__).resolve().parent / "data" / "imagebind_audio_golden.npz"
# A zero-padded frame after normalisation, in float32 as the pipeline computes it.
PADDING = (torch.zeros(()) - torch.tensor(IMAGEBIND_AUDIO_MEAN)) / torch.tensor(IMAGEBIND_AUDIO_STD)


# --- helpers ---------------------------------------------------------------------------------


def tone(rate: int, seconds: float, freq: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    """[channels, n] integer samples -> a WAV file (sample width from the dtype; uint8 = 8-bit)."""
    width = {np.dtype(np.uint8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 4}[pcm.dtype]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(pcm.shape[0])
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(pcm.T).astype(pcm.dtype.newbyteorder("<")).tobytes())
    return buffer.getvalue()


def wav24_bytes(pcm24: np.ndarray, rate: int) -> bytes:
    """[channels, n] int32 holding 24-bit values -> a 24-bit WAV file."""
    interleaved = np.ascontiguousarray(pcm24.T).reshape(-1).astype("<i4")
    raw = interleaved.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()  # little-endian low 3 bytes
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(pcm24.shape[0])
        out.setsampwidth(3)
        out.setframerate(rate)
        out.writeframes(raw)
    return buffer.getvalue()


def encode(samples: np.ndarray, rate: int, container: str, codec: str, **options: str) -> bytes:
    """Float [channels, n] -> encoded bytes with PyAV (it converts to the encoder's sample format)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.layout = "stereo" if samples.shape[0] == 2 else "mono"
        for start in range(0, samples.shape[1], 1000):
            chunk = np.ascontiguousarray(samples[:, start:start + 1000], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=stream.layout.name)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def knf_fbank(x: np.ndarray, num_bins: int, low_freq: float) -> np.ndarray:
    """kaldi-native-fbank with the options ImageBind passes to torchaudio."""
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.frame_opts.frame_length_ms = 25
    opts.frame_opts.frame_shift_ms = 10
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.frame_opts.round_to_power_of_two = True
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = num_bins
    opts.mel_opts.low_freq = low_freq
    opts.mel_opts.high_freq = 0
    opts.use_energy = False
    opts.htk_compat = True
    opts.use_log_fbank = True
    opts.use_power = True
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, x.tolist())
    fbank.input_finished()
    return np.array([fbank.get_frame(i) for i in range(fbank.num_frames_ready)], dtype=np.float32)


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as data:
        return {key: data[key] for key in data.files}


def golden_input(golden, name: str) -> tuple[torch.Tensor, int]:
    pcm = golden[f"{name}/pcm"]
    return torch.from_numpy(pcm.astype(np.float32)) / 32768.0, int(golden[f"{name}/rate"])


# --- clip placement (pytorchvideo ConstantClipsPerVideoSampler, as ImageBind loops it) -------


def test_clip_spans_short_audio_repeats_one_clip_from_zero():
    assert clip_spans(0.7, 2, 3) == [(Fraction(0), Fraction(2))] * 3


def test_clip_spans_exactly_one_clip_long():
    assert clip_spans(2.0, 2, 3) == [(Fraction(0), Fraction(2))] * 3


def test_clip_spans_spread_evenly_from_start_to_end():
    # The step is max_start / (count - 1): the last clip ends at the end of the recording.
    assert clip_spans(2.5, 2, 3) == [(Fraction(0), Fraction(2)), (Fraction(1, 4), Fraction(9, 4)),
                                     (Fraction(1, 2), Fraction(5, 2))]
    assert clip_spans(10.0, 2, 3) == [(Fraction(0), Fraction(2)), (Fraction(4), Fraction(6)),
                                      (Fraction(8), Fraction(10))]


def test_clip_spans_long_recording():
    spans = clip_spans(600.5, 2, 3)
    assert [start for start, _ in spans] == [Fraction(0), Fraction(1197, 4), Fraction(1197, 2)]
    assert all(end - start == 2 for start, end in spans)


def test_clip_spans_keep_the_samplers_float_subtraction():
    # pytorchvideo computes duration - 2 in float, then takes that float exactly.
    spans = clip_spans(10.1, 2, 3)
    assert spans[2][0] == Fraction(10.1 - 2.0) != Fraction(81, 10)
    assert all(isinstance(value, Fraction) for span in spans for value in span)


def test_clip_spans_single_clip_and_bad_count():
    assert clip_spans(5.0, 2, 1) == [(Fraction(0), Fraction(2))]
    with pytest.raises(ValueError):
        clip_spans(5.0, 2, 0)


# --- resampling (torchaudio.functional.resample) ---------------------------------------------


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 32000, 44100, 48000])
def test_resample_matches_torchaudio(golden, rate):
    waveform, _ = golden_input(golden, f"resample_{rate}")
    expected = torch.from_numpy(golden[f"resample_{rate}/out"])
    torch.testing.assert_close(resample(waveform, rate, 16000), expected, rtol=0, atol=1e-6)


def test_resample_upsampling_matches_torchaudio(golden):
    waveform, rate = golden_input(golden, "resample_8000")
    expected = torch.from_numpy(golden["resample_8000/out_up"])
    torch.testing.assert_close(resample(waveform, rate, 44100), expected, rtol=0, atol=1e-6)


def test_resample_same_rate_is_identity():
    x = torch.randn(2, 1000)
    assert resample(x, 16000, 16000) is x


@pytest.mark.parametrize("orig, new", [(44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000)])
def test_resample_keeps_a_sines_frequency_and_amplitude(orig, new):
    x = torch.from_numpy(tone(orig, 0.5, 1000.0).astype(np.float32))[None]
    y = resample(x, orig, new)[0].numpy()
    expected = tone(new, 0.5, 1000.0)[: len(y)]
    middle = slice(100, len(y) - 100)  # away from the zero-padded edges
    assert np.abs(y[middle] - expected[middle]).max() < 2e-3


@pytest.mark.parametrize("length", [1, 440, 441, 4410, 44099, 44101])
def test_resample_length_is_ceil_of_the_ratio(length):
    assert resample(torch.zeros(1, length), 44100, 16000).shape == (1, math.ceil(length * 16000 / 44100))


def test_resampled_length_keeps_torchaudios_float32_rounding():
    # 48 kHz -> 16 kHz of 3 * 2**23 + 1 samples (8.7 min): torchaudio rounds the quotient to float32.
    assert resampled_length(3 * 2**23 + 1, 48000, 16000) == 2**23
    assert resampled_length(3 * 2**20 + 1, 48000, 16000) == 2**20 + 1


def test_resample_refuses_awkward_rate_ratios():
    with pytest.raises(InvalidInputError, match="awkward"):
        resample(torch.zeros(1, 100), 44101, 16000)


# --- Kaldi fbank (torchaudio.compliance.kaldi.fbank with ImageBind's options) ----------------


@pytest.mark.parametrize("name", ["fbank_noise", "fbank_chirp", "fbank_quiet", "fbank_one_frame", "fbank_559",
                                  "fbank_560", "fbank_stereo"])
def test_fbank_matches_torchaudio(golden, name):
    waveform, rate = golden_input(golden, name)
    expected = torch.from_numpy(golden[f"{name}/out"])
    torch.testing.assert_close(kaldi_fbank(waveform, rate), expected, rtol=1e-6, atol=1e-5)


def _fbank_signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(8000) / 16000
    return {
        "noise": 0.3 * rng.standard_normal(16000),
        "chirp": np.sin(2 * np.pi * (50 * t + (7900 - 50) * t * t / (2 * 0.5))),
        "quiet": 1e-4 * rng.standard_normal(3000),
        "dc_and_tone": 0.4 + tone(16000, 0.2, 3000.0, 0.1),
        "odd_length": rng.uniform(-0.5, 0.5, 1234),
    }


@pytest.mark.parametrize("num_bins, low_freq", [(80, 20.0), (128, 40.0)])
@pytest.mark.parametrize("name", list(_fbank_signals()))
def test_fbank_matches_kaldi_native_fbank(name, num_bins, low_freq):
    # kaldi-native-fbank, like Kaldi, refuses ImageBind's exact setting (128 bins from 20 Hz leave
    # one bin empty, see below), so the same pipeline is compared at two nearby settings.
    x = _fbank_signals()[name].astype(np.float32)
    ours = kaldi_fbank(torch.from_numpy(x)[None], 16000, num_mel_bins=num_bins, low_freq=low_freq).numpy()
    theirs = knf_fbank(x, num_bins, low_freq)
    assert ours.shape == theirs.shape
    # Bins 15+ nats (~6.5 decades of power) under the frame's peak are float32 FFT leakage, where
    # two float32 FFTs legitimately disagree (up to ~0.03 on the chirp); compare the rest tightly.
    audible = theirs > theirs.max(axis=1, keepdims=True) - 15
    assert np.abs(ours - theirs)[audible].max() < 5e-4


def test_fbank_imagebind_setting_has_one_empty_mel_bin():
    # With 128 bins from 20 Hz and a 512-point FFT at 16 kHz, bin 3 falls between FFT bins:
    # torchaudio (unlike Kaldi) allows it, and it always reads log(float32 epsilon).
    x = torch.from_numpy(np.random.default_rng(3).standard_normal(4000).astype(np.float32))[None]
    out = kaldi_fbank(x, 16000)
    assert torch.all(out[:, 3] == math.log(torch.finfo(torch.float32).eps))
    assert torch.all(out[:, [2, 4]] > -10)


@pytest.mark.parametrize("length, frames", [(400, 1), (559, 1), (560, 2), (32000, 198)])
def test_fbank_keeps_only_whole_frames(length, frames):
    assert kaldi_fbank(torch.zeros(1, length) + 0.1, 16000).shape == (frames, 128)


def test_fbank_refuses_less_than_one_frame():
    with pytest.raises(InvalidInputError):
        kaldi_fbank(torch.zeros(1, 399), 16000)


def test_fbank_reads_channel_zero_only():
    x = torch.randn(2, 2000)
    torch.testing.assert_close(kaldi_fbank(x, 16000), kaldi_fbank(x[:1], 16000), rtol=0, atol=0)


# --- ImageBind clips ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["imagebind_8k_stereo_2s3", "imagebind_22k_mono_0s5"])
def test_audio_clips_match_the_reference_pipeline(golden, name):
    waveform, rate = golden_input(golden, name)
    expected = torch.from_numpy(golden[f"{name}/out"])
    ours = audio_clips(waveform, rate)[..., torch.from_numpy(golden["e2e_frames"])]
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-5)


def _dc_heavy_recording(seconds: float = 2.5) -> torch.Tensor:
    rng = np.random.default_rng(11)
    n = int(16000 * seconds)
    left = 0.6 + 0.05 * rng.standard_normal(n)
    right = -0.2 + 0.05 * rng.standard_normal(n)
    return torch.from_numpy(np.stack([left, right]).astype(np.float32))


def test_audio_clips_shift_the_shared_waveform_in_place_like_imagebind():
    # ImageBind subtracts each clip's mean from a view of one waveform, so later overlapping clips
    # start from already-shifted samples. Replicated by hand here, then against a naive copy.
    waveform = _dc_heavy_recording()
    ours = audio_clips(waveform, 16000)

    def clip_features(clip: torch.Tensor) -> torch.Tensor:
        spectrum = torch.nn.functional.pad(kaldi_fbank(clip, 16000).T, (0, 6))
        return (spectrum[None] - IMAGEBIND_AUDIO_MEAN) / IMAGEBIND_AUDIO_STD

    shared, shifted, naive = waveform.clone(), [], []
    for start, end in clip_spans(2.5, 2, 3):
        view = shared[:, int(start * 16000):int(end * 16000)]
        copy = waveform[:, int(start * 16000):int(end * 16000)].clone()
        view -= view.mean()
        shifted.append(clip_features(view))
        naive.append(clip_features(copy - copy.mean()))
    torch.testing.assert_close(ours, torch.stack(shifted), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(ours[0], naive[0], rtol=1e-6, atol=1e-5)  # the first clip sees fresh data
    # Frames straddling the edge of the region shifted by earlier clips differ from a clean copy.
    assert (ours[1] - naive[1]).abs().max() > 0.05
    assert (ours[2] - naive[2]).abs().max() > 0.05


def test_audio_clips_leave_the_callers_waveform_alone():
    waveform = _dc_heavy_recording()
    before = waveform.clone()
    audio_clips(waveform, 16000)
    assert torch.equal(waveform, before)


def test_audio_clips_shape_and_padding():
    waveform = torch.from_numpy(tone(16000, 3.0, 440.0).astype(np.float32))[None]
    out = audio_clips(waveform, 16000)
    assert out.shape == (3, 1, 128, 204) and out.dtype == torch.float32
    # A 2 s clip has 198 frames; the rest is zero padding, normalised.
    assert torch.all(out[..., 198:] == PADDING)
    assert not torch.all(out[..., 197] == PADDING)


def test_audio_clips_short_audio_pads_each_identical_clip():
    waveform = torch.from_numpy(tone(16000, 0.5, 440.0).astype(np.float32))[None]
    out = audio_clips(waveform, 16000)
    frames = 1 + (8000 - 400) // 160
    assert torch.all(out[..., frames:] == PADDING)
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-4)  # same samples (mean-shifted again)


def test_audio_clips_refuse_audio_shorter_than_one_frame():
    # The reference fails on it (torchaudio asserts a frame fits); we say why.
    with pytest.raises(InvalidInputError, match="too short"):
        audio_clips(torch.zeros(1, 1000), 48000)  # 333 samples at 16 kHz


# --- decoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_decode_wav16_is_bit_exact(rate, channels):
    rng = np.random.default_rng(rate + channels)
    pcm = rng.integers(-32768, 32768, (channels, rate // 10)).astype(np.int16)
    pcm[0, :2] = [-32768, 32767]
    waveform, sample_rate = decode_audio(wav_bytes(pcm, rate))
    assert sample_rate == rate
    assert waveform.dtype == torch.float32 and waveform.is_contiguous()
    assert torch.equal(waveform, torch.from_numpy(pcm).float() / 32768)


def test_decode_wav_other_sample_widths_scale_like_torchaudio():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (2, 500)).astype(np.uint8)
    assert torch.equal(decode_audio(wav_bytes(u8, 8000))[0], (torch.from_numpy(u8).float() - 128) / 128)
    s32 = rng.integers(-2**31, 2**31, (1, 500), dtype=np.int64).astype(np.int32)
    assert torch.equal(decode_audio(wav_bytes(s32, 8000))[0], torch.from_numpy(s32).float() / 2**31)
    s24 = rng.integers(-2**23, 2**23, (2, 500)).astype(np.int32)
    assert torch.equal(decode_audio(wav24_bytes(s24, 8000))[0], torch.from_numpy(s24).float() / 2**23)


def test_decode_flac_is_lossless():
    samples = np.stack([tone(44100, 0.3, 440.0), tone(44100, 0.3, 660.0, 0.3)])
    flac = encode(samples, 44100, "flac", "flac")
    waveform, rate = decode_audio(flac)
    pcm16 = np.round(samples * 32767)  # the encoder's own float -> s16 rounding, within one step
    assert rate == 44100 and waveform.shape == (2, samples.shape[1])
    assert np.abs(waveform.numpy() * 32768 - pcm16).max() <= 1
    assert torch.equal(waveform * 32768, torch.round(waveform * 32768))  # exact multiples of 2**-15


@pytest.mark.parametrize("container, codec, rate, channels, options", [
    ("mp3", "libmp3lame", 44100, 2, {}),
    ("mp3", "libmp3lame", 16000, 1, {}),
    ("ogg", "vorbis", 48000, 2, {"strict": "experimental"}),  # FFmpeg's own Vorbis encoder: stereo only
    ("ogg", "libopus", 48000, 1, {}),
    ("ipod", "aac", 44100, 2, {}),  # .m4a
])
def test_decode_lossy_formats(container, codec, rate, channels, options):
    freqs = [440.0, 1000.0][:channels]
    samples = np.stack([tone(rate, 0.5, f) for f in freqs])
    waveform, sample_rate = decode_audio(encode(samples, rate, container, codec, **options))
    assert sample_rate == rate and waveform.shape[0] == channels
    assert abs(waveform.shape[1] - samples.shape[1]) < rate * 0.05  # codec delay/padding at most
    for channel, freq in enumerate(freqs):
        assert abs(dominant_frequency(waveform[channel].numpy(), rate) - freq) < 0.02 * freq
    assert 0.3 < float(waveform.abs().max()) < 1.0


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("data", [
    b"",
    b"hello, this is not audio" * 20,
    np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    bytes(4096),
    _png(),
    wav_bytes(np.zeros((1, 1000), np.int16), 16000)[:30],  # header cut short
    wav_bytes(np.zeros((1, 0), np.int16), 16000),  # no samples
], ids=["empty", "text", "random", "zeros", "png", "truncated_header", "no_samples"])
def test_decode_refuses_what_is_not_audio(data):
    with pytest.raises(InvalidInputError):
        decode_audio(data)


def test_decode_keeps_what_a_truncated_file_holds():
    pcm = np.arange(-500, 500, dtype=np.int16)[None]
    waveform, _ = decode_audio(wav_bytes(pcm, 16000)[:44 + 600])
    assert torch.equal(waveform, torch.from_numpy(pcm[:, :300]).float() / 32768)


def test_decode_refuses_audio_over_the_duration_cap():
    data = wav_bytes(np.zeros((1, 3 * 8000), np.int16), 8000)
    assert decode_audio(data, max_seconds=3.0)[0].shape == (1, 24000)
    with pytest.raises(InvalidInputError, match="longer than"):
        decode_audio(data, max_seconds=2.5)


def test_decode_refuses_absurd_channel_counts():
    with pytest.raises(InvalidInputError, match="channels"):
        decode_audio(wav_bytes(np.zeros((audio.MAX_AUDIO_CHANNELS + 1, 100), np.int16), 16000))


def test_decode_refuses_sample_rates_out_of_range():
    with pytest.raises(InvalidInputError, match="sample rate"):
        decode_audio(wav_bytes(np.zeros((1, 100), np.int16), 500))


def test_decode_refuses_non_finite_samples():
    samples = np.zeros((1, 1000), np.float32)
    samples[0, 10] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        decode_audio(encode(samples, 16000, "wav", "pcm_f32le"))


def test_decode_survives_corrupted_headers():
    original = bytearray(wav_bytes(np.random.default_rng(1).integers(-2000, 2000, (2, 4000)).astype(np.int16), 16000))
    rng = np.random.default_rng(2)
    for _ in range(60):
        data = bytearray(original)
        for position in rng.integers(0, 64, 3):
            data[position] = int(rng.integers(0, 256))
        try:
            waveform, _ = decode_audio(bytes(data), max_seconds=60)
        except InvalidInputError:
            continue
        assert waveform.dtype == torch.float32 and waveform.dim() == 2


# --- end to end ----------------------------------------------------------------------------------


def test_preprocess_audio_end_to_end_is_deterministic():
    samples = np.stack([tone(44100, 3.0, 440.0), tone(44100, 3.0, 3000.0, 0.2)])
    data = encode(samples, 44100, "mp3", "libmp3lame")
    first = preprocess_audio(data)
    assert first.shape == (3, 1, 128, 204) and first.dtype == torch.float32
    assert torch.isfinite(first).all()
    assert torch.equal(first, preprocess_audio(data))
    assert torch.equal(first, audio_clips(*decode_audio(data)))


def test_preprocess_audio_refuses_bad_bytes():
    with pytest.raises(InvalidInputError):
        preprocess_audio(b"RIFF\x00\x00\x00\x00WAVEjunk")


def test_decode_caps_total_samples_over_all_channels(monkeypatch):
    monkeypatch.setattr(audio, "MAX_AUDIO_SAMPLES", 10_000)
    decode_audio(wav_bytes(np.zeros((2, 5000), np.int16), 16000))
    with pytest.raises(InvalidInputError, match="longer than"):
        decode_audio(wav_bytes(np.zeros((2, 5001), np.int16), 16000))


def test_audio_clips_refuse_samples_that_overflow_the_features():
    waveform = torch.from_numpy(tone(16000, 0.5, 440.0, 1e30).astype(np.float32))[None]
    with pytest.raises(InvalidInputError, match="too large"):
        audio_clips(waveform, 16000)
