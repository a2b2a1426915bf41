"""The openvino backend: our PyTorch towers converted once, cached beside the weights, and run by
OpenVINO, giving the torch backend's vectors (fp32: cosine >= 0.99999) for every family that
opts in, whatever the batch."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import handspring_models
from handspring_models.runtime import backends, openvino_towers

from .conftest import encode, sample_photos
from .test_tokenizer import TEXTS

COSINE = 0.99999


def assert_same_vectors(ours: np.ndarray, reference: np.ndarray) -> None:
    cosines = (ours * reference).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(reference, axis=-1)
    assert cosines.min() >= COSINE, cosines
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), np.linalg.norm(reference, axis=-1), rtol=1e-5)


@pytest.fixture
def weights_copy(tiny_weights, tmp_path):
    """The tiny CLIP in a folder of this test's own, so its converted towers start from nothing."""
    return shutil.copytree(tiny_weights, tmp_path / "weights")


@pytest.fixture(scope="module")
def openvino_clip(tiny_weights, tmp_path_factory):
    folder = shutil.copytree(tiny_weights, tmp_path_factory.mktemp("openvino") / "weights")
    return handspring_models.load("clip_vit_b_32", folder, precision="fp32", backend="openvino")


def test_texts_match_the_torch_backend(openvino_clip, tiny_clip):
    assert_same_vectors(openvino_clip.embed_texts(TEXTS), tiny_clip.embed_texts(TEXTS))


def test_images_match_the_torch_backend(openvino_clip, tiny_clip, photos):
    images = [encode(image.convert("RGB")) for image in photos.values()]
    assert_same_vectors(openvino_clip.embed_images(images), tiny_clip.embed_images(images))


def test_a_text_alone_equals_it_in_a_batch_of_longer_ones(openvino_clip):
    texts = ["a dog", "a photograph of a very small brown dog sleeping on a red sofa", "x " * 100]
    alone = np.stack([openvino_clip.embed_texts([t])[0] for t in texts])
    np.testing.assert_allclose(openvino_clip.embed_texts(texts), alone, atol=1e-5)


def test_one_image_equals_it_in_a_batch(openvino_clip, photos):
    images = [encode(image.convert("RGB")) for image in photos.values()]
    alone = np.stack([openvino_clip.embed_images([i])[0] for i in images])
    np.testing.assert_allclose(openvino_clip.embed_images(images), alone, atol=1e-5)


def test_towers_are_converted_once_then_read_from_the_cache(weights_copy, monkeypatch):
    first = handspring_models.load("clip_vit_b_32", weights_copy, precision="fp32", backend="openvino")
    converted = sorted(p.name for p in (weights_copy / "openvino").iterdir())
    assert [name.split("-")[0] for name in converted] == ["image", "text"]
    assert all(any((weights_copy / "openvino" / name / "compiled").iterdir()) for name in converted)

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(openvino_towers, "convert", no_conversion)
    again = handspring_models.load("clip_vit_b_32", weights_copy, precision="fp32", backend="openvino")
    np.testing.assert_array_equal(again.embed_texts(["a dog"]), first.embed_texts(["a dog"]))


def test_the_torch_weights_are_not_kept(openvino_clip):
    assert openvino_clip.model is None
    assert openvino_clip.backend == "openvino"
    assert openvino_clip.runs_precision == "fp32"


def test_bf16_says_what_it_runs(weights_copy):
    from handspring_models.runtime.precision import native_bf16

    bf16 = handspring_models.load("clip_vit_b_32_text", weights_copy, precision="bf16", backend="openvino")
    assert bf16.precision == "bf16"
    assert bf16.runs_precision == ("bf16" if native_bf16() else "fp32")


def test_the_cache_key_follows_the_weights_the_code_and_the_tower(tmp_path):
    code = tmp_path / "model.py"
    code.write_text("x = 1\n")
    key = openvino_towers.cache_key("manifest-a", [code], "text")
    assert openvino_towers.cache_key("manifest-a", [code], "text") == key
    assert openvino_towers.cache_key("manifest-b", [code], "text") != key
    assert openvino_towers.cache_key("manifest-a", [code], "image") != key
    code.write_text("x = 2\n")
    assert openvino_towers.cache_key("manifest-a", [code], "text") != key


def test_one_tower_feature_converts_only_its_tower(weights_copy):
    text_only = handspring_models.load("clip_vit_b_32_text", weights_copy, backend="openvino")
    assert text_only.embed_texts(["a dog"]).shape == (1, text_only.dim)
    assert [p.name.split("-")[0] for p in (weights_copy / "openvino").iterdir()] == ["text"]


def test_a_new_conversion_removes_the_towers_stale_irs(weights_copy, monkeypatch):
    handspring_models.load("clip_vit_b_32", weights_copy, backend="openvino")
    old = {p.name for p in (weights_copy / "openvino").iterdir()}
    monkeypatch.setattr(openvino_towers, "cache_key", lambda manifest, code, tower: "0" * 16)
    handspring_models.load("clip_vit_b_32_text", weights_copy, backend="openvino")  # as after a code change
    now = {p.name for p in (weights_copy / "openvino").iterdir()}
    assert {name.split("-")[0] for name in now} == {"image", "text"}
    assert now & old == {name for name in old if name.startswith("image-")}  # only the text tower was redone


def test_an_unknown_backend_is_refused(tiny_weights):
    with pytest.raises(ValueError, match="backend must be one of torch, openvino"):
        handspring_models.load("clip_vit_b_32", tiny_weights, backend="onnx")


def test_a_missing_openvino_package_is_named(monkeypatch):
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(backends.BackendUnavailableError, match=r"pip install 'handspring\[openvino\]'"):
        backends.resolve("openvino")


def test_a_family_without_towers_is_refused_by_name(imagebind_tiny_weights):
    with pytest.raises(backends.BackendUnavailableError, match="imagebind_huge.*backend='torch'"):
        handspring_models.load("imagebind_huge_audio", imagebind_tiny_weights, backend="openvino")


@pytest.mark.parametrize("model", ["st_clip_vit_b_32_multilingual_v1", "siglip2_base_patch16_224"])
def test_the_other_families_match_torch(model, tmp_path):
    from handspring_models.weights.build import random_weights

    from .siglip.test_embedder import encode_blank
    from .test_clip_family import small_architecture

    if model.startswith("siglip"):
        from handspring_models.siglip import SiglipConfig
        from handspring_models.siglip.model import TextConfig, VisionConfig

        architecture = SiglipConfig(vision=VisionConfig(32, 16, 32, 1, 2, 64), text=TextConfig(64, 600, 32, 1, 2, 64, 32))
    else:
        architecture = small_architecture(model)
    random_weights(model, tmp_path, seed=5, architecture=architecture)
    torch_backend = handspring_models.load(model, tmp_path, precision="fp32")
    openvino = handspring_models.load(model, tmp_path, precision="fp32", backend="openvino")
    texts = ["a dog", "zwei Hunde auf einer Wiese", "", "a much longer text " * 20]
    assert_same_vectors(openvino.embed_texts(texts), torch_backend.embed_texts(texts))
    if "image" in openvino.modalities:
        images = [encode_blank(), encode(next(iter(sample_photos().values())))]
        assert_same_vectors(openvino.embed_images(images), torch_backend.embed_images(images))
    assert openvino.extras == torch_backend.extras  # e.g. SigLIP's logit scale and bias, kept for /meta


def test_the_service_serves_the_openvino_backend(app_settings, tiny_clip, tiny_weights, tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app

    from .test_app_contract import wait_ready

    folder = shutil.copytree(tiny_weights, tmp_path / "weights")
    with TestClient(create_app(app_settings(weights_dir=folder, backend="openvino")), raise_server_exceptions=False) as c:
        wait_ready(c)
        assert c.get("/meta").json()["backend"] == "openvino"
        r = c.post("/vectorize", json={"texts": ["a dog", "two cats on a mat"]})
        assert r.status_code == 200, r.text
        assert_same_vectors(np.array(r.json()["textVectors"]), tiny_clip.embed_texts(["a dog", "two cats on a mat"]))


def test_the_compile_command_converts_ahead_of_the_first_load(weights_copy, monkeypatch, capsys):
    from handspring_models.weights.__main__ import main

    assert main(["compile", str(weights_copy), "--backend", "openvino"]) == 0
    assert "ready for openvino" in capsys.readouterr().out
    monkeypatch.setattr(openvino_towers, "convert", lambda *a, **k: pytest.fail("converted at load"))
    assert handspring_models.load("clip_vit_b_32", weights_copy, backend="openvino").embed_texts(["a"]).shape[0] == 1
