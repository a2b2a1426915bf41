"""The service with HANDSPRING_FEATURE naming a SigLIP model: Weaviate's multi2vec-clip
``/vectorize`` contract with raw (unnormalized) vectors, /meta saying so and reporting the loss
scalars, and each text's vector independent of what the cross-request batcher put beside it."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

import handspring_models
from app.main import create_app
from app.settings import Settings
from tests.conftest import encode
from tests.siglip.conftest import SIGLIP2_MODEL, TEXTS
from tests.test_app_contract import b64, post, wait_ready

pytestmark = pytest.mark.timeout(300)

ALIAS = "google/siglip2-base-patch16-224"


@pytest.fixture(scope="module")
def settings(siglip2_tiny_weights, monkeypatch_module):
    """Settings as the container reads them, from HANDSPRING_* variables (the alias: a Hub repo id)."""
    import torch

    monkeypatch_module.setenv("HANDSPRING_FEATURE", ALIAS)
    monkeypatch_module.setenv("HANDSPRING_WEIGHTS_DIR", str(siglip2_tiny_weights))
    monkeypatch_module.setenv("HANDSPRING_PRECISION", "fp32")
    monkeypatch_module.setenv("HANDSPRING_THREADS", str(torch.get_num_threads()))
    monkeypatch_module.setenv("HANDSPRING_BATCH_WINDOW_MS", "50")  # time for concurrent requests to share a batch
    return Settings.from_env()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def library(siglip2_tiny_weights):
    return handspring_models.load(SIGLIP2_MODEL, weights_dir=siglip2_tiny_weights, precision="fp32")


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def test_the_alias_resolves_to_the_canonical_feature(settings):
    assert settings.feature == SIGLIP2_MODEL


def test_meta_says_raw_features_and_reports_the_loss_scalars(client, library):
    meta = client.get("/meta").json()
    assert meta["model"] == SIGLIP2_MODEL and ALIAS in meta["aliases"]
    assert meta["normalized"] is False and meta["weaviate_default_normalized"] is False
    assert "not normalized" in meta["output"] and meta["dim"] == library.dim
    assert meta["weights"]["license"] == "Apache-2.0"
    sigmoid = meta["model_extra"]["sigmoid"]
    assert sigmoid["logit_scale"] == pytest.approx(library.logit_scale)
    assert sigmoid["logit_bias"] == pytest.approx(library.logit_bias)
    json.dumps(meta)  # plain JSON all through


def test_vectorize_answers_the_librarys_raw_vectors(client, library, photos):
    images = [encode(photos["astronaut_rgb"], "JPEG"), encode(photos["camera_L"], "PNG"),
              encode(photos["chelsea_rgba"], "PNG")]
    r = post(client, {"texts": TEXTS[:6], "images": [b64(i) for i in images]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"textVectors", "imageVectors"}
    np.testing.assert_allclose(body["textVectors"], library.embed_texts(TEXTS[:6]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(body["imageVectors"], library.embed_images(images), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.linalg.norm(body["textVectors"], axis=1), 1.0)


def text_forward_passes(metrics: str) -> float:
    match = re.search(r'^handspring_batch_size_count\{modality="text"\} (\S+)$', metrics, re.M)
    assert match, "no text forward pass in /metrics"
    return float(match.group(1))


def test_a_text_has_one_vector_whatever_shares_its_batch(settings, serve_app, library):
    """One text per request, sent together so the service batches them across requests, then
    again in one request in another order: every text's vector equals the library's alone."""

    async def main():
        async with serve_app(create_app(settings)) as http:
            async def one(text):
                r = await http.post("/vectorize", content=json.dumps({"texts": [text]}).encode())
                assert r.status_code == 200, r.text
                return r.json()["textVectors"][0]

            singles = await asyncio.gather(*(one(t) for t in TEXTS))
            passes = text_forward_passes((await http.get("/metrics")).text)
            together = await http.post("/vectorize", content=json.dumps({"texts": TEXTS[::-1]}).encode())
            return np.array(singles), np.array(together.json()["textVectors"][::-1]), passes

    singles, together, passes = asyncio.run(main())
    assert passes < len(TEXTS)  # the single-text requests did share forward passes
    alone = np.concatenate([library.embed_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(singles, alone, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_a_bad_image_is_a_named_4xx(client):
    r = post(client, {"images": [b64(b"not an image")]})
    assert 400 <= r.status_code < 500 and "image" in r.text
