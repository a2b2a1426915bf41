"""The HTTP contract Weaviate's multi2vec-clip module relies on (see
/work/shared/docs/weaviate-contract.md), run in-process on the tiny random-weight checkpoint."""

from __future__ import annotations

import base64
import json
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

import handspring_models
from app.main import create_app
from handspring_models.runtime import panel_gemm
from handspring_models.runtime.kernels import linear_kernels
from tests.conftest import encode

pytestmark = pytest.mark.timeout(120)

TEXTS = [
    "a photo of a cat",
    "",
    "ünïcødé text ✓ 🐱 — with punctuation!",
    "a very long description " * 40,  # far over 77 tokens: truncated, never an error
    "x",
    "before <|endoftext|> after",
]


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/.well-known/ready").status_code == 204:
            return
        time.sleep(0.02)
    raise AssertionError(f"not ready after {timeout}s: {client.get('/.well-known/ready').text}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def client(app_settings):
    with TestClient(create_app(app_settings()), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def images(photos) -> list[bytes]:
    return [
        encode(photos["astronaut_rgb"], "PNG"),
        encode(photos["chelsea_rgb_451x300"], "JPEG", quality=90),
        encode(photos["camera_L"], "PNG"),
        encode(photos["chelsea_rgba"], "PNG"),
        encode(photos["astronaut_P"], "GIF"),
        encode(photos["coffee_640x427"], "WEBP"),
        encode(photos["chelsea_tall_small"], "BMP"),
    ]


def post(client, body, **kwargs):
    """POST /vectorize with a raw JSON body and NO Content-Type header (as Weaviate's bind client)."""
    return client.post("/vectorize", content=json.dumps(body).encode(), **kwargs)


# ---------------------------------------------------------------- probes

def test_live_and_ready_are_204_without_body(client):
    for path in ("/.well-known/live", "/.well-known/ready"):
        for method in ("GET", "HEAD"):
            r = client.request(method, path)
            assert r.status_code == 204 and r.content == b"", (method, path)


def test_ready_is_503_until_the_model_is_loaded(app_settings, tiny_weights):
    gate = threading.Event()

    def slow_loader(settings):
        assert gate.wait(60)
        return handspring_models.load(settings.feature, settings.weights_dir, precision=settings.precision)

    with TestClient(create_app(app_settings(), loader=slow_loader), raise_server_exceptions=False) as c:
        assert c.get("/.well-known/live").status_code == 204  # the process answers while loading
        assert c.head("/.well-known/live").status_code == 204
        r = c.get("/.well-known/ready")
        assert r.status_code == 503 and r.json() == {"error": "model is loading"}
        assert c.head("/.well-known/ready").status_code == 503
        for r in (c.get("/meta"), c.post("/vectorize", content=b'{"texts": ["a"]}')):
            assert r.status_code == 503 and r.json() == {"error": "model is loading"}
        assert c.get("/metrics").status_code == 200
        gate.set()
        wait_ready(c)
        assert c.post("/vectorize", content=b'{"texts": ["a"]}').status_code == 200


def test_shutdown_during_a_slow_load_does_not_wait_for_it(app_settings):
    gate = threading.Event()

    def stuck_loader(settings):
        gate.wait(60)
        raise handspring_models.WeightsError("never mind")

    app = create_app(app_settings(), loader=stuck_loader)
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            assert c.get("/.well-known/ready").status_code == 503
        assert app.state.service.state == "stopped"
    finally:
        gate.set()


def test_the_model_is_warmed_up_before_ready(app_settings):
    calls = []

    class Warm:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def warmup(self):
            calls.append(time.monotonic())
            self.inner.warmup()

    def loader(settings):
        return Warm(handspring_models.load(settings.feature, settings.weights_dir, precision="fp32"))

    with TestClient(create_app(app_settings(), loader=loader), raise_server_exceptions=False) as c:
        wait_ready(c)
        assert len(calls) == 1


def test_a_failed_load_keeps_ready_at_503_with_the_reason(app_settings):
    def broken_loader(settings):
        raise handspring_models.WeightsError("text.safetensors is corrupt")

    app = create_app(app_settings(), loader=broken_loader)
    with TestClient(app, raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 30
        while app.state.service.state == "loading" and time.monotonic() < deadline:
            time.sleep(0.01)
        r = c.get("/.well-known/ready")
        assert r.status_code == 503 and "text.safetensors is corrupt" in r.json()["error"]
        assert c.get("/.well-known/live").status_code == 204
        assert c.post("/vectorize", content=b"{}").status_code == 503


def test_a_wrong_weights_dir_stops_startup_with_the_reason(app_settings, tmp_path):
    app = create_app(app_settings(weights_dir=tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="does not exist"), TestClient(app):
        pass


def test_importing_the_module_level_app_loads_nothing():
    from app import main

    assert not hasattr(main.app.state, "service")  # built in the lifespan, from the environment


# ---------------------------------------------------------------- /meta

def test_meta(client, tiny_clip, tiny_weights):
    r = client.get("/meta")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    meta = r.json()
    assert meta["model"] == "clip_vit_b_32" and meta["feature"] == "clip_vit_b_32"
    assert meta["features"] == ["clip_vit_b_32"] and meta["modalities"] == ["text", "image"]
    assert meta["dim"] == tiny_clip.dim == 32 and meta["normalized"] is True
    assert meta["precision"] == {"requested": "fp32", "resolved": "fp32", "runs": "fp32"}
    config = json.loads((tiny_weights / "config.json").read_text())
    assert meta["weights"] == {"dir": str(tiny_weights), "manifest_sha256": tiny_clip.manifest_sha256,
                               "source": config["source"], "license": config["license"], "random": False}
    assert meta["version"] == handspring_models.__version__
    assert set(meta["batching"]) == {"window_ms", "max_batch", "preprocess_workers", "threads", "take_turns"}
    assert set(meta["limits"]) == {"max_body_bytes", "max_items", "max_image_pixels", "max_concurrent_requests",
                                   "max_prepared_mb", "request_timeout_s", "drain_timeout_s"}


def test_meta_says_which_kernels_run_the_linear_layers(client, tiny_clip):
    meta = client.get("/meta").json()
    counts = meta["linear_kernels"]
    assert counts == linear_kernels(tiny_clip.model) and sum(counts.values()) > 0
    # the panel kernel's build is named where it runs a layer, and is the one this CPU runs best
    assert meta["panel_kernel_build"] == (panel_gemm.native_isa() if counts["panel"] else None)


# ---------------------------------------------------------------- /vectorize

def test_vectors_equal_the_library_in_order_and_unit_norm(client, tiny_clip, images):
    r = post(client, {"texts": TEXTS, "images": [b64(i) for i in images]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"textVectors", "imageVectors"}
    texts, imgs = np.array(body["textVectors"]), np.array(body["imageVectors"])
    assert texts.shape == (len(TEXTS), 32) and imgs.shape == (len(images), 32)
    np.testing.assert_allclose(texts, tiny_clip.embed_texts(TEXTS), atol=1e-5)
    np.testing.assert_allclose(imgs, tiny_clip.embed_images(images), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.concatenate([texts, imgs]), axis=1), 1.0, atol=1e-5)


def test_each_input_alone_gives_the_same_vector(client, tiny_clip, images):
    """Order and batch companions do not matter: one object per request, as Weaviate sends."""
    ref_t, ref_i = tiny_clip.embed_texts(TEXTS), tiny_clip.embed_images(images)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(post(client, {"texts": [text]}).json()["textVectors"][0], ref_t[i], atol=1e-5)
    for i, image in enumerate(images):
        np.testing.assert_allclose(post(client, {"images": [b64(image)]}).json()["imageVectors"][0], ref_i[i], atol=1e-5)
    reverse = post(client, {"texts": TEXTS[::-1]}).json()["textVectors"]
    np.testing.assert_allclose(reverse, ref_t[::-1], atol=1e-5)


@pytest.mark.parametrize("body, n_texts, n_images", [
    ({}, 0, 0),
    ({"texts": ["a", "b"]}, 2, 0),
    ({"images": None, "texts": ["a"]}, 1, 0),
    ({"texts": []}, 0, 0),
    ({"texts": [], "images": []}, 0, 0),
    ({"images": ["IMG"]}, 0, 1),
    ({"texts": ["a", "b", "c"], "images": ["IMG", "IMG"]}, 3, 2),
])
def test_omitted_fields_answer_empty_lists(client, images, body, n_texts, n_images):
    if body.get("images"):
        body = {**body, "images": [b64(images[2])] * len(body["images"])}
    r = post(client, body)
    assert r.status_code == 200
    out = r.json()
    assert set(out) == {"textVectors", "imageVectors"}  # both always present, like the reference
    assert (len(out["textVectors"]), len(out["imageVectors"])) == (n_texts, n_images)


def test_no_content_type_and_other_content_types_are_accepted(client, tiny_clip):
    payload = json.dumps({"texts": ["a dog"]}).encode()
    r = client.post("/vectorize", content=payload)
    assert "content-type" not in r.request.headers  # really sent without one
    assert r.status_code == 200
    for content_type in ("application/json", "text/plain", "application/json; charset=utf-8"):
        other = client.post("/vectorize", content=payload, headers={"Content-Type": content_type})
        assert other.status_code == 200 and other.json() == r.json()
    np.testing.assert_allclose(r.json()["textVectors"][0], tiny_clip.embed_texts(["a dog"])[0], atol=1e-5)


def test_base64_variants(client, images):
    raw = images[1]  # JPEG
    plain = post(client, {"images": [b64(raw)]}).json()["imageVectors"][0]
    wrapped = "\n".join(b64(raw)[i:i + 76] for i in range(0, len(b64(raw)), 76))  # MIME line breaks
    variants = [
        "data:image/jpeg;base64," + b64(raw),
        "data:application/octet-stream;base64," + b64(raw),
        wrapped,
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]
    out = post(client, {"images": variants})
    assert out.status_code == 200, out.text
    for vector in out.json()["imageVectors"]:
        np.testing.assert_allclose(vector, plain, atol=1e-6)


def test_answer_is_plain_json_floats(client):
    r = post(client, {"texts": ["a"]})
    text = r.content.decode()
    assert "NaN" not in text and "Infinity" not in text
    assert all(isinstance(x, float) for x in r.json()["textVectors"][0])


# ---------------------------------------------------------------- /metrics

def test_metrics(client):
    post(client, {"texts": ["one", "two"]})
    client.get("/nope")
    text = client.get("/metrics").text
    assert 'handspring_items_total{modality="text"}' in text
    assert 'handspring_batch_size_bucket{le="1.0",modality="text"}' in text
    assert 'handspring_inference_seconds_count{modality="text"}' in text
    assert "handspring_queue_depth 0.0" in text and "handspring_ready 1.0" in text
    assert 'handspring_requests_total{method="POST",route="/vectorize",status="200"}' in text
    assert 'handspring_requests_total{method="GET",route="unmatched",status="404"}' in text


def test_openapi_documents_the_wire_format(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/vectorize"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) >= {"texts", "images"}
