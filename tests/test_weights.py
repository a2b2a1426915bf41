"""Weights folders: layout, per-modality loading, manifest checks and clear errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import handspring_models
from handspring_models.weights import verify
from handspring_models.weights.__main__ import main
from tests.conftest import REPO


@pytest.fixture
def weights_copy(tiny_weights, tmp_path):
    return shutil.copytree(tiny_weights, tmp_path / "w")


def test_folder_layout(tiny_weights):
    names = sorted(p.name for p in tiny_weights.iterdir())
    assert names == ["config.json", "image.safetensors", "manifest.json", "merges.txt", "text.safetensors"]
    config = json.loads((tiny_weights / "config.json").read_text())
    assert config["model"] == "clip_vit_b_32"
    assert config["components"] == {"image": "image.safetensors", "text": "text.safetensors"}


def test_components_hold_only_their_modality(tiny_weights):
    from safetensors import safe_open

    with safe_open(tiny_weights / "image.safetensors", "pt") as f:
        assert all(k.startswith("visual.") for k in f.keys())
    with safe_open(tiny_weights / "text.safetensors", "pt") as f:
        keys = list(f.keys())
        assert keys and not any(k.startswith("visual.") for k in keys)
        assert "token_embedding.weight" in keys and "text_projection" in keys


def test_verify_passes_on_fresh_folder(tiny_weights):
    assert verify(tiny_weights) == []
    assert main(["verify", str(tiny_weights)]) == 0


def test_verify_names_a_tampered_file(weights_copy, capsys):
    with open(weights_copy / "text.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    assert main(["verify", str(weights_copy)]) == 1
    assert "text.safetensors does not match its sha256" in capsys.readouterr().err


def test_verify_names_a_missing_file(weights_copy):
    (weights_copy / "merges.txt").unlink()
    assert any("merges.txt is missing" in p for p in verify(weights_copy))


@pytest.mark.parametrize("feature, present", [("clip_vit_b_32_text", "text"), ("clip_vit_b_32_image", "image")])
def test_one_modality_feature_loads_only_its_file(weights_copy, feature, present):
    absent = "image" if present == "text" else "text"
    (weights_copy / f"{absent}.safetensors").unlink()
    model = handspring_models.load(feature, weights_copy)
    assert model.modalities == (present,)
    assert getattr(model.model, "visual") is None if present == "text" else not hasattr(model.model, "token_embedding")


def test_one_modality_feature_embeds_like_the_whole_model(tiny_weights, photos):
    whole = handspring_models.load("clip_vit_b_32", tiny_weights)
    text = handspring_models.load("clip_vit_b_32_text", tiny_weights)
    image = handspring_models.load("clip_vit_b_32_image", tiny_weights)
    np.testing.assert_array_equal(text.embed_texts(["a dog"]), whole.embed_texts(["a dog"]))
    img = [photos["astronaut_rgb"]]
    np.testing.assert_array_equal(image.embed_images(img), whole.embed_images(img))


def test_missing_modality_is_a_clear_error(tiny_weights):
    model = handspring_models.load("clip_vit_b_32_text", tiny_weights)
    with pytest.raises(handspring_models.MissingModalityError, match="clip_vit_b_32_text does not embed image"):
        model.embed_images([b"x"])


def test_missing_folder_says_how_to_get_weights(tmp_path):
    with pytest.raises(handspring_models.WeightsError, match="download"):
        handspring_models.load("clip_vit_b_32", tmp_path / "nowhere")


def test_missing_component_is_named(weights_copy):
    (weights_copy / "image.safetensors").unlink()
    with pytest.raises(handspring_models.WeightsError, match="image.safetensors is missing"):
        handspring_models.load("clip_vit_b_32", weights_copy)


def test_corrupt_component_is_named(weights_copy):
    (weights_copy / "text.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(handspring_models.WeightsError, match="text.safetensors is corrupt"):
        handspring_models.load("clip_vit_b_32_text", weights_copy)


def test_corrupt_config_is_named(weights_copy):
    (weights_copy / "config.json").write_text("{")
    with pytest.raises(handspring_models.WeightsError, match="config.json is corrupt"):
        handspring_models.load("clip_vit_b_32", weights_copy)


def test_handspring_home_sets_the_default_folder(tiny_weights, monkeypatch, tmp_path):
    (tmp_path / "clip_vit_b_32").symlink_to(tiny_weights)
    monkeypatch.setenv("HANDSPRING_HOME", str(tmp_path))
    assert handspring_models.load("clip_vit_b_32_text").weights_dir == tmp_path / "clip_vit_b_32"


def test_unknown_feature_and_precision(tiny_weights):
    with pytest.raises(ValueError, match="unknown feature"):
        handspring_models.load("clip_vit_g_99", tiny_weights)
    with pytest.raises(ValueError, match="precision"):
        handspring_models.load("clip_vit_b_32", tiny_weights, precision="fp8")


def test_convert_rejects_a_non_clip_file(tmp_path, capsys):
    import torch

    torch.save({"weight": torch.zeros(3)}, tmp_path / "x.pt")
    assert main(["convert", str(tmp_path / "x.pt"), "--model", "clip_vit_b_32", "--out", str(tmp_path / "o"),
                 "--merges", str(tmp_path / "x.pt")]) == 1
    assert "not a CLIP ViT checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o" / "config.json").exists()


def test_download_offline_fails_clearly(tmp_path):
    """Offline (as here), `download` must say what failed, not print a traceback."""
    env = {"PATH": "/usr/bin:/bin", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HANDSPRING_WEIGHTS_DIR": ""}
    run = subprocess.run([sys.executable, "-m", "handspring_models.weights", "download", "clip_vit_b_32",
                          "--out", str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1
    assert "could not download" in run.stderr and "openai/clip-vit-base-patch32" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_random_demo_weights_are_labelled_and_load(tmp_path):
    assert main(["random", "clip_vit_b_32", "--out", str(tmp_path / "demo")]) == 0
    config = json.loads((tmp_path / "demo" / "config.json").read_text())
    assert "random" in config["source"] and "NOT a trained model" in config["source"]
    model = handspring_models.load("clip_vit_b_32_text", tmp_path / "demo")
    assert model.embed_texts(["hello"]).shape == (1, 512)


def test_ensure_prints_only_the_folder_to_serve(tmp_path):
    """`make run` serves what `ensure` prints: offline it is the labelled random demo, alone on stdout."""
    env = {"PATH": "/usr/bin:/bin", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run([sys.executable, "-m", "handspring_models.weights", "ensure", "clip_vit_b_32",
                          "--out", str(tmp_path / "clip")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(tmp_path / "clip-random-demo")
    assert "RANDOM-WEIGHT demo model" in run.stderr
    assert json.loads((tmp_path / "clip-random-demo" / "config.json").read_text())["source"].startswith("random")


def test_token_table_stays_on_the_file_and_only_its_rows_are_cast(tiny_weights):
    """The token embedding is memory-mapped, as stored (float32), whatever the precision; a bf16
    model gets exactly the rows it would get from a bf16 copy of the whole table."""
    from safetensors.torch import load_file

    table = load_file(tiny_weights / "text.safetensors")["token_embedding.weight"]
    bf16 = handspring_models.load("clip_vit_b_32_text", tiny_weights, precision="bf16")
    mapped = bf16.model.token_embedding.weight
    assert mapped.dtype == torch.float32 and torch.equal(mapped, table)
    mapped_files = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else None
    if mapped_files is not None:
        assert str(tiny_weights / "text.safetensors") in mapped_files
    tokens = torch.tensor([[5, 17, 300, 2]])
    rows = bf16.model.token_embedding(tokens).to(torch.bfloat16)
    assert torch.equal(rows, table.to(torch.bfloat16)[tokens])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_map_tensor_reads_what_safetensors_reads(tmp_path, dtype):
    from safetensors.torch import save_file

    from handspring_models.weights import map_tensor

    tensors = {"a": torch.arange(7, dtype=torch.int64), "table": torch.randn(33, 5).to(dtype), "z": torch.ones(3)}
    save_file(tensors, tmp_path / "t.safetensors")
    mapped = map_tensor(tmp_path / "t.safetensors", "table")
    assert mapped.dtype == dtype and torch.equal(mapped, tensors["table"])
    with pytest.raises(ValueError, match="'a' is not a float32, float16 or bfloat16 tensor"):
        map_tensor(tmp_path / "t.safetensors", "a")


def test_a_missing_lookup_table_is_named(weights_copy):
    from handspring_models.weights import WeightsError, load_component

    with pytest.raises(WeightsError, match="has no tensor 'nope'"):
        load_component(weights_copy, "text.safetensors", torch.float32, mapped=("nope",))
