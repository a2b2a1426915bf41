"""The OpenAI CLIPs published in transformers' format (ViT-B/16, L/14, L/14 at 336 px) equal
transformers' CLIPModel on the same random weights of each model's full width, heads, patch and
image size, converted with our command line and loaded by name. ViT-B/32 has its own tests
(test_model_fidelity.py, full depth too)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import handspring_models
from tests.conftest import build_hf_clip
from tests.test_model_fidelity import EXACT, cosines
from tests.test_tokenizer import TEXTS

PHOTOS = ("chelsea_rgb_451x300", "camera_L", "coffee_rgb_600x400")


# Every layer is the same code under the same weight names: the full 12-24 layers add minutes, not coverage.
DEPTH = 2


def hf_config(name: str) -> dict:
    """transformers' CLIPConfig of a registry entry's shape, DEPTH layers deep."""
    arch = handspring_models.find_model(name).architecture
    v, t = arch["vision"], arch["text"]
    return dict(
        text_config=dict(vocab_size=t["vocab_size"], hidden_size=t["width"], intermediate_size=4 * t["width"],
                         num_hidden_layers=DEPTH, num_attention_heads=t["heads"],
                         max_position_embeddings=t["context_length"], hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=v["width"], intermediate_size=4 * v["width"], num_hidden_layers=DEPTH,
                           num_attention_heads=v["heads"], image_size=v["image_size"], patch_size=v["patch_size"],
                           hidden_act="quick_gelu"),
        projection_dim=arch["embed_dim"],
    )


@pytest.fixture(scope="module", params=["clip_vit_b_16", "clip_vit_l_14", "clip_vit_l_14_336"])
def variant(request, tmp_path_factory, bpe_path):
    """(name, transformers model, our fp32 embedder with raw outputs), built once per model."""
    from handspring_models.weights.__main__ import main

    name = request.param
    root = tmp_path_factory.mktemp(name)
    hf = build_hf_clip(hf_config(name), root / "hf", bpe_path, seed=11)
    assert main(["convert", str(root / "hf"), "--model", name, "--out", str(root / "ours")]) == 0
    shutil.rmtree(root / "hf")  # the converted folder is all the tests need from disk
    ours = handspring_models.load(name, weights_dir=root / "ours", precision="fp32", normalize=False)
    yield name, hf, ours
    shutil.rmtree(root, ignore_errors=True)


def hf_features(out) -> np.ndarray:
    return getattr(out, "pooler_output", out).numpy()


@pytest.mark.slow
def test_images_equal_transformers(variant, photos):
    name, hf, ours = variant
    pixels = [ours.prepare("image", photos[p]) for p in PHOTOS]
    assert pixels[0].shape[-1] == handspring_models.find_model(name).image.size
    got = ours.encode("image", pixels)
    with torch.no_grad():
        want = hf_features(hf.get_image_features(pixel_values=torch.stack(pixels)))
    assert cosines(got, want).min() >= EXACT
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(want, axis=-1), rtol=1e-5)


@pytest.mark.slow
def test_texts_equal_transformers(variant):
    _, hf, ours = variant
    ids = [ours.prepare("text", t) for t in TEXTS]
    tokens = torch.zeros(len(ids), 77, dtype=torch.long)
    for row, t in enumerate(ids):
        tokens[row, : len(t)] = t
    got = ours.encode("text", ids)
    with torch.no_grad():
        want = hf_features(hf.get_text_features(input_ids=tokens))
    assert cosines(got, want).min() >= EXACT
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(want, axis=-1), rtol=1e-5)


@pytest.mark.slow
def test_served_vectors_are_unit_vectors_by_default(variant):
    """Weaviate's transformers path L2-normalizes: the registry's default for these models."""
    name, _, ours = variant
    served = handspring_models.load(f"{name}_text", weights_dir=ours.weights_dir, precision="fp32")
    assert served.normalize is True
    vectors = served.embed_texts(TEXTS[:3])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)
    raw = ours.embed_texts(TEXTS[:3])
    np.testing.assert_allclose(vectors, raw / np.linalg.norm(raw, axis=-1, keepdims=True), atol=1e-6)
