"""ImageBind against the reference implementation, tensor for tensor.

The reference cannot run here at test time (its package needs torchvision), so its outputs were
made once on the same seeded random weights and inputs (tests/imagebind_cases.py) by
tests/data/make_imagebind_golden.py and stored in tests/data/imagebind_golden_<case>.npz. The
weights and inputs are regenerated from the seeds here, converted by our own converter, and run
through our model.
"""

from __future__ import annotations

import gc
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import handspring_models
from handspring_models.imagebind import checkpoint as ckpt
from handspring_models.weights import convert, random_weights, read_config
from tests.imagebind_cases import CASES, HUGE, TEXTS, TINY, WEIGHTS_SEED, model_inputs

DATA = Path(__file__).parent / "data"
NON_TEXT = ("vision", "video", "audio", "depth", "thermal", "imu")
FEATURE_OF = {"vision": "imagebind_huge_image", "video": "imagebind_huge_video", "audio": "imagebind_huge_audio",
              "depth": "imagebind_huge_depth", "thermal": "imagebind_huge_thermal", "imu": "imagebind_huge_imu"}
SERVICE_MODALITY = {"vision": "image", "video": "video", "audio": "audio", "depth": "depth", "thermal": "thermal",
                    "imu": "imu"}


def golden(case: str) -> dict[str, np.ndarray]:
    return dict(np.load(DATA / f"imagebind_golden_{case}.npz"))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def encode(embedder, name: str, x: torch.Tensor) -> np.ndarray:
    """Model inputs of one case straight into ``encode`` (one prepared item per row)."""
    return embedder.encode(SERVICE_MODALITY[name], list(x))


@pytest.fixture(scope="module")
def huge_dir(tmp_path_factory, bpe_path):
    """Full-size imagebind_huge with the seeded random weights and the real vocabulary (4.8 GB of
    float32 on disk, removed after this module: the suite's disk is not to hold every big checkpoint at once)."""
    out = tmp_path_factory.mktemp("imagebind-huge")
    random_weights("imagebind_huge", out, WEIGHTS_SEED)
    with gzip.open(bpe_path, "rb") as src, open(out / "merges.txt", "wb") as dst:
        shutil.copyfileobj(src, dst)
    yield out
    shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------- conversion


def test_converted_folder_has_one_file_per_modality(imagebind_tiny_weights):
    config = read_config(imagebind_tiny_weights)
    assert sorted(config["components"]) == ["audio", "depth", "imu", "text", "thermal", "vision"]
    assert "CC BY-NC-SA 4.0" in config["license"]


def test_convert_drops_only_the_causal_mask_buffer(imagebind_tiny_weights, imagebind_tiny_pth):
    from safetensors import safe_open

    official = set(torch.load(imagebind_tiny_pth, weights_only=True))
    ours = set()
    for name in read_config(imagebind_tiny_weights)["components"].values():
        with safe_open(imagebind_tiny_weights / name, framework="pt") as f:
            ours |= set(f.keys())
    assert official - ours == {ckpt.CAUSAL_MASK_KEY}
    assert ours - official == set()


def test_architecture_is_read_off_the_checkpoint():
    with torch.device("meta"):
        huge_state = handspring_models.imagebind.model.ImageBind(HUGE).state_dict()
    assert ckpt.config_from_state(huge_state) == HUGE
    with pytest.raises(ValueError, match="head count"):  # not guessed: heads change the maths
        ckpt.config_from_state(ckpt.random_state_dict(TINY))


def test_convert_refuses_a_checkpoint_of_another_shape(tmp_path):
    state = ckpt.random_state_dict(TINY)
    state["modality_trunks.audio.blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(handspring_models.WeightsError, match="fc1"):
        convert(tmp_path / "bad.pth", "imagebind_huge", tmp_path / "out", architecture=TINY)


def test_random_weights_are_the_same_for_a_seed():
    a, b = ckpt.random_state_dict(TINY, 3), ckpt.random_state_dict(TINY, 3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["modality_trunks.imu.blocks.0.attn.bias_k"],
                           ckpt.random_state_dict(TINY, 4)["modality_trunks.imu.blocks.0.attn.bias_k"])


# ---------------------------------------------------------------- the tiny model against the reference


@pytest.mark.parametrize("name", NON_TEXT)
def test_tiny_matches_reference(imagebind_tiny_weights, name):
    cfg, clips = CASES["tiny"]
    embedder = handspring_models.load(FEATURE_OF[name], imagebind_tiny_weights, "fp32", normalize=False)
    ours = encode(embedder, name, model_inputs(cfg, clips)[name])
    ref = golden("tiny")[name]
    assert cosine(ours, ref).min() >= 0.99999
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)  # the scales too, not only directions


def test_tiny_text_matches_reference(imagebind_tiny_weights):
    embedder = handspring_models.load("imagebind_huge_text", imagebind_tiny_weights, "fp32", normalize=False)
    ref = golden("tiny")
    ours = embedder.embed_texts(TEXTS)
    assert cosine(ours, ref["text"]).min() >= 0.99999
    np.testing.assert_allclose(ours, ref["text"], rtol=1e-4, atol=1e-4)


def test_tokenizer_matches_reference_tokens(imagebind_tiny_weights):
    embedder = handspring_models.load("imagebind_huge_text", imagebind_tiny_weights, "fp32")
    tokens = golden("tiny")["text_tokens"]
    for text, row in zip(TEXTS, tokens):
        ids = embedder.tokenizer(text)
        assert ids == row[: len(ids)].tolist() and not row[len(ids):].any()


def test_unit_vectors_by_default_parallel_to_raw_outputs(imagebind_tiny_weights):
    cfg, clips = CASES["tiny"]
    x = model_inputs(cfg, clips)["audio"]
    raw = encode(handspring_models.load("imagebind_huge_audio", imagebind_tiny_weights, "fp32", normalize=False), "audio", x)
    unit = encode(handspring_models.load("imagebind_huge_audio", imagebind_tiny_weights, "fp32"), "audio", x)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=-1, keepdims=True), atol=1e-6)
    assert np.linalg.norm(raw, axis=-1).min() > 5  # audio is scaled x20 before clip averaging


def test_a_feature_loads_only_its_tower(imagebind_tiny_weights):
    embedder = handspring_models.load("imagebind_huge_depth", imagebind_tiny_weights, "fp32")
    towers = {name.split(".")[1] for name, _ in embedder.model.named_parameters()}
    assert towers == {"depth"}
    with pytest.raises(handspring_models.MissingModalityError, match="imagebind_huge_audio"):
        embedder.prepare("audio", b"")


def test_image_and_video_share_the_vision_file(imagebind_tiny_weights):
    embedder = handspring_models.load("imagebind_huge_video", imagebind_tiny_weights, "fp32")
    assert {name.split(".")[1] for name, _ in embedder.model.named_parameters()} == {"vision"}


def test_video_clips_average_after_normalizing(imagebind_tiny_weights):
    """Averaging clip vectors (not frames, not tokens): the mean of the clips' own vectors."""
    cfg, clips = CASES["tiny"]
    video = model_inputs(cfg, clips)["video"][0]  # [15, 3, 2, 224, 224]
    embedder = handspring_models.load("imagebind_huge_video", imagebind_tiny_weights, "fp32", normalize=False)
    whole = embedder.encode("video", [video])
    per_clip = np.concatenate([embedder.encode("video", [clip[None]]) for clip in video[:15]])
    np.testing.assert_allclose(whole[0], per_clip.mean(0), atol=1e-5)


# ---------------------------------------------------------------- full size


@pytest.mark.slow
@pytest.mark.parametrize("name", NON_TEXT + ("text",))
def test_huge_matches_reference(huge_dir, name):
    """Full-size imagebind_huge, fp32, one modality's component at a time."""
    ref = golden("huge")
    feature = "imagebind_huge_text" if name == "text" else FEATURE_OF[name]
    embedder = handspring_models.load(feature, huge_dir, "fp32", normalize=False)
    if name == "text":
        ours = embedder.embed_texts(TEXTS)
    else:
        cfg, clips = CASES["huge"]
        ours = encode(embedder, name, model_inputs(cfg, clips)[name])
    del embedder
    gc.collect()
    assert cosine(ours, ref[name]).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), np.linalg.norm(ref[name], axis=-1), rtol=1e-4)


@pytest.mark.slow
def test_huge_component_sizes(huge_dir):
    """An audio-only feature reads ~350 MB of float32, not the whole 4.8 GB."""
    sizes = {name: (huge_dir / f"{name}.safetensors").stat().st_size / 1e6
             for name in ("vision", "text", "audio", "depth", "thermal", "imu")}
    assert 330 < sizes["audio"] < 360
    assert 2400 < sizes["vision"] < 2600
    assert sum(sizes.values()) < 4900


def test_download_offline_fails_with_one_clear_error(tmp_path, monkeypatch):
    from handspring_models.weights import download

    def offline(url, dst, progress=True):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(handspring_models.WeightsError, match="could not download https://dl.fbaipublicfiles.com"):
        download("imagebind_huge", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_download_converts_the_cached_checkpoint(tmp_path, monkeypatch, imagebind_tiny_pth, bpe_path):
    """A checkpoint already in torch hub's cache is converted without fetching it again."""
    import shutil as sh

    from handspring_models import find_model
    from handspring_models.weights import download

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / find_model("imagebind_huge").source.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    sh.copy(imagebind_tiny_pth, cached)
    sh.copy(bpe_path, cached.parent / bpe_path.name)  # the vocabulary beside it, as in ImageBind's repo
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded again"))
    with pytest.raises(handspring_models.WeightsError, match="head count"):  # tiny: heads unknown, never guessed
        download("imagebind_huge", tmp_path / "out")
