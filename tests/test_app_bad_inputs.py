"""A corpus of bad requests: each gets the right 4xx with JSON {"error": ...} naming the problem,
and the server stays ready and correct afterwards. Internal failures are 500 JSON."""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

import handspring_models
from app.main import create_app
from tests.conftest import encode

pytestmark = pytest.mark.timeout(120)

MAX_BODY = 1 << 20
MAX_ITEMS = 8
MAX_PIXELS = 1_000_000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels, with (almost) no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/.well-known/ready").status_code != 204:
        assert time.monotonic() < deadline, "not ready"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(app_settings):
    settings = app_settings(max_body_bytes=MAX_BODY, max_items=MAX_ITEMS, max_image_pixels=MAX_PIXELS)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def good_image(photos) -> bytes:
    return encode(photos["chelsea_tall_small"], "PNG")


@pytest.fixture(scope="module")
def reference(tiny_clip, good_image):
    return tiny_clip.embed_texts(["still fine"])[0], tiny_clip.embed_images([good_image])[0]


def assert_still_serving(client, good_image, reference):
    assert client.get("/.well-known/ready").status_code == 204
    r = client.post("/vectorize", content=json.dumps({"texts": ["still fine"], "images": [b64(good_image)]}))
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["textVectors"][0], reference[0], atol=1e-5)
    np.testing.assert_allclose(r.json()["imageVectors"][0], reference[1], atol=1e-5)


def jpeg(photos) -> bytes:
    return encode(photos["coffee_rgb_600x400"], "JPEG", quality=90)


def png(photos) -> bytes:
    return encode(photos["chelsea_rgb_451x300"], "PNG")


# name -> (body builder(photos, good_image), status, words the error must contain)
CORPUS = {
    "malformed JSON": (lambda p, g: b'{"texts": ["a"', 400, ["malformed JSON"]),
    "not UTF-8": (lambda p, g: b'{"texts": ["\xff\xfe"]}', 400, ["malformed JSON"]),
    "empty body": (lambda p, g: b"", 400, ["empty body"]),
    "array body": (lambda p, g: b'[{"texts": ["a"]}]', 422, ["JSON object", "array"]),
    "string body": (lambda p, g: b'"a cat"', 422, ["JSON object", "string"]),
    "texts not a list": (lambda p, g: b'{"texts": "a cat"}', 422, ["texts", "array of strings"]),
    "images an object": (lambda p, g: b'{"images": {"0": "abc"}}', 422, ["images", "array of strings"]),
    "null item": (lambda p, g: b'{"texts": ["a", null]}', 422, ["texts[1]", "null"]),
    "int item": (lambda p, g: b'{"texts": [1]}', 422, ["texts[0]", "number"]),
    "nested list item": (lambda p, g: b'{"images": [["abc"]]}', 422, ["images[0]", "array"]),
    "unknown field": (lambda p, g: b'{"text": ["a"]}', 422, ["text", "unknown field", "texts"]),
    "invalid base64": (lambda p, g: json.dumps({"images": ["this is not base64!"]}).encode(), 422,
                       ["images[0]", "invalid base64"]),
    "bad data URL": (lambda p, g: json.dumps({"images": ["data:image/png," + b64(g)]}).encode(), 422,
                     ["images[0]", "data URL"]),
    "empty image": (lambda p, g: b'{"images": [""]}', 422, ["images[0]", "empty"]),
    "not an image": (lambda p, g: json.dumps({"images": [b64(b"just some text, no pixels")]}).encode(), 422,
                     ["images[0]", "not an image"]),
    "truncated PNG": (lambda p, g: json.dumps({"images": [b64(png(p)[: len(png(p)) // 2])]}).encode(), 422,
                      ["images[0]"]),
    "truncated JPEG": (lambda p, g: json.dumps({"images": [b64(jpeg(p)[: len(jpeg(p)) // 2])]}).encode(), 422,
                       ["images[0]"]),
    "PNG header claiming 10 gigapixels": (lambda p, g: json.dumps({"images": [b64(png_header_only(100_000, 100_000))]})
                                          .encode(), 422, ["images[0]", "10000000000 pixels", "limit"]),
    "real image over the pixel limit": (lambda p, g: json.dumps(
        {"images": [b64(g), b64(encode(p["astronaut_large_1600x1200"], "JPEG"))]}).encode(), 422,
        ["images[1]", "1600x1200", "over the limit of 1000000"]),
    "third image bad": (lambda p, g: json.dumps({"texts": ["ok"], "images": [b64(g), b64(g), b64(b"GIF89a broken")]})
                        .encode(), 422, ["images[2]"]),
    "too many items": (lambda p, g: json.dumps({"texts": ["a"] * 5, "images": [b64(g)] * 4}).encode(), 413,
                       ["too many items", "9", "texts: 5", "images: 4", "HANDSPRING_MAX_ITEMS"]),
    "oversized body": (lambda p, g: json.dumps({"texts": ["a" * (MAX_BODY + 10)]}).encode(), 413,
                       ["over the limit", str(MAX_BODY)]),
    "modality the feature lacks": (lambda p, g: json.dumps({"audio": [b64(b"RIFF....WAVE")]}).encode(), 422,
                                   ["audio", "clip_vit_b_32", "does not embed audio"]),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_bad_request_is_a_clear_4xx_and_the_server_stays_ready(client, photos, good_image, reference, name):
    build, status, words = CORPUS[name]
    r = client.post("/vectorize", content=build(photos, good_image))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    for word in words:
        assert word in body["error"], (word, body["error"])
    assert_still_serving(client, good_image, reference)


def test_oversized_chunked_body_is_cut_off_while_reading(app_settings, serve_app):
    """No Content-Length (chunked): the limit is enforced on the stream, long before its end.
    Driven at the ASGI level, since test clients buffer the whole body before the app sees it."""
    import asyncio

    app = create_app(app_settings(max_body_bytes=MAX_BODY))
    chunk = b" " * 65536
    total_chunks = 64  # 4 MiB, four times the limit

    async def main():
        async with serve_app(app):
            received, sent = [], []

            async def receive():
                received.append(1)
                return {"type": "http.request", "body": chunk, "more_body": len(received) < total_chunks}

            async def send(message):
                sent.append(message)

            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": "/vectorize", "raw_path": b"/vectorize", "query_string": b"",
                     "root_path": "", "headers": [(b"host", b"test"), (b"transfer-encoding", b"chunked")],
                     "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
            await app(scope, receive, send)
            start = next(m for m in sent if m["type"] == "http.response.start")
            body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
            return start["status"], json.loads(body), len(received)

    status, body, chunks_read = asyncio.run(asyncio.wait_for(main(), 60))
    assert status == 413 and "over the limit" in body["error"]
    assert chunks_read == MAX_BODY // len(chunk) + 1  # stopped at the first chunk past the limit


def test_oversized_chunked_body_via_http_client(client, good_image, reference):
    r = client.post("/vectorize", content=(b" " * 65536 for _ in range(64)))
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    assert_still_serving(client, good_image, reference)


def test_a_lying_content_length_is_checked_up_front(client):
    r = client.post("/vectorize", content=b"{}", headers={"Content-Length": str(MAX_BODY * 4)})
    assert r.status_code == 413


def test_unknown_route_and_wrong_method_are_json(client):
    r = client.get("/vectorise")
    assert r.status_code == 404 and r.json() == {"error": "no such route: GET /vectorise"}
    for method, path in (("GET", "/vectorize"), ("PUT", "/vectorize"), ("POST", "/meta"),
                         ("DELETE", "/.well-known/ready"), ("POST", "/.well-known/live")):
        r = client.request(method, path)
        assert r.status_code == 405, (method, path)
        assert r.json()["error"].startswith(f"method {method} is not allowed on {path}")
        assert r.headers.get("allow")


def test_text_only_feature_refuses_images_naming_the_feature(app_settings, photos, tiny_clip):
    with TestClient(create_app(app_settings(feature="clip_vit_b_32_text")), raise_server_exceptions=False) as c:
        wait_ready(c)
        assert c.get("/meta").json()["modalities"] == ["text"]
        r = c.post("/vectorize", content=json.dumps({"texts": ["a"], "images": [b64(encode(photos["camera_L"]))]}))
        assert r.status_code == 422
        error = r.json()["error"]
        assert "images" in error and "clip_vit_b_32_text" in error and "does not embed image" in error
        r = c.post("/vectorize", content=b'{"texts": ["a cat"]}')
        assert r.status_code == 200 and r.json()["imageVectors"] == []
        np.testing.assert_allclose(r.json()["textVectors"][0], tiny_clip.embed_texts(["a cat"])[0], atol=1e-5)
        assert c.post("/vectorize", content=b'{"images": []}').status_code == 200  # asks for nothing


class FailingEncoder:
    """The real tiny model, whose forward pass fails while ``broken`` is set."""

    def __init__(self, inner):
        self.inner = inner
        self.broken = True

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, modality, prepared):
        if self.broken:
            raise RuntimeError("simulated out-of-memory in the model")
        return self.inner.encode(modality, prepared)


def test_internal_failure_is_a_logged_500_json_and_the_server_recovers(app_settings, caplog):
    holder = {}

    def loader(settings):
        holder["e"] = FailingEncoder(handspring_models.load(settings.feature, settings.weights_dir, precision="fp32"))
        return holder["e"]

    with TestClient(create_app(app_settings(), loader=loader), raise_server_exceptions=False) as c:
        wait_ready(c)
        r = c.post("/vectorize", content=b'{"texts": ["a"]}')
        assert r.status_code == 500
        assert set(r.json()) == {"error"} and "simulated out-of-memory" in r.json()["error"]
        assert any("simulated out-of-memory" in (rec.exc_text or "") for rec in caplog.records if rec.exc_info)
        assert c.get("/.well-known/ready").status_code == 204
        holder["e"].broken = False
        assert c.post("/vectorize", content=b'{"texts": ["a"]}').status_code == 200
        assert 'handspring_encode_errors_total{modality="text"} 1.0' in c.get("/metrics").text
