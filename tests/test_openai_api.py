"""OpenAI's embeddings API (``/v1/embeddings``, ``/v1/models``), in-process on the tiny random
CLIP: its wire format, its errors in OpenAI's shape, its vectors equal to /vectorize's, and the
optional API key. tests/test_openai_sdk.py drives a real server with the official SDK."""

from __future__ import annotations

import base64
import json
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

import handspring_models
from app.main import create_app
from app.openai_schemas import TOKEN_IDS_REFUSED
from app.settings import Settings, SettingsError
from tests.conftest import encode
from tests.test_app_contract import wait_ready

pytestmark = pytest.mark.timeout(120)

MODEL = "clip_vit_b_32"
KEYS = ("first-key", "sk-second.key_2")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def client(app_settings):
    with TestClient(create_app(app_settings()), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def locked(app_settings):
    """A server that wants one of KEYS."""
    with TestClient(create_app(app_settings(api_keys=KEYS)), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def png(photos) -> bytes:
    return encode(photos["chelsea_tall_small"], "PNG")


@pytest.fixture(scope="module")
def jpeg(photos) -> bytes:
    return encode(photos["coffee_rgb_600x400"], "JPEG", quality=90)


def embed(client, **body):
    return client.post("/v1/embeddings", json={"model": MODEL, **body})


def vectors(answer: dict) -> np.ndarray:
    data = answer["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    assert all(d["object"] == "embedding" for d in data)
    return np.array([d["embedding"] for d in data], dtype=np.float32)


def assert_openai_error(response, status: int, param: str | None, *needles: str, code: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["code"] == code
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    for needle in needles:
        assert needle in error["message"], error["message"]
    return error


# ------------------------------------------------------------------ answers


def test_a_string_is_one_text_in_openais_answer_shape(client, tiny_clip):
    r = embed(client, input="a photo of a cat")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["object"] == "list" and answer["model"] == MODEL
    tokens = len(tiny_clip.prepare("text", "a photo of a cat"))
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    np.testing.assert_allclose(vectors(answer), tiny_clip.embed_texts(["a photo of a cat"]), atol=1e-5)


def test_texts_and_images_mixed_keep_their_order_and_equal_vectorize(client, png, jpeg):
    texts = ["a photo of a cat", "", "a dog " * 40]
    body = [{"image": b64(png)}, texts[0], {"text": texts[1]}, {"image": "data:image/jpeg;base64," + b64(jpeg)},
            texts[2]]
    r = embed(client, input=body)
    assert r.status_code == 200, r.text
    got = vectors(r.json())
    reference = client.post("/vectorize", json={"texts": texts, "images": [b64(png), b64(jpeg)]}).json()
    want = np.array([reference["imageVectors"][0], reference["textVectors"][0], reference["textVectors"][1],
                     reference["imageVectors"][1], reference["textVectors"][2]], dtype=np.float32)
    assert np.array_equal(got, want)  # identical floats, not merely close


def test_base64_is_the_little_endian_float32_bytes_of_the_same_vectors(client, png):
    body = ["a photo of a cat", {"image": b64(png)}]
    floats = vectors(embed(client, input=body, encoding_format="float").json())
    encoded = embed(client, input=body, encoding_format="base64").json()
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in encoded["data"]])
    assert np.array_equal(decoded, floats)


def test_an_image_only_request_counts_no_tokens(client, png):
    answer = embed(client, input=[{"image": b64(png)}]).json()
    assert answer["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


def test_dimensions_equal_to_the_models_are_accepted(client, tiny_clip):
    r = embed(client, input="x", dimensions=tiny_clip.dim)
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == tiny_clip.dim


def test_user_is_accepted_and_ignored(client):
    assert embed(client, input="x", user="someone").status_code == 200


def test_the_model_by_any_of_its_listed_names(client):
    for model in client.get("/v1/models").json()["data"]:
        r = client.post("/v1/embeddings", json={"model": model["id"], "input": "x"})
        assert r.status_code == 200 and r.json()["model"] == MODEL


def test_a_one_tower_feature_answers_to_its_own_name_too(app_settings):
    with TestClient(create_app(app_settings(feature="clip_vit_b_32_text")), raise_server_exceptions=False) as c:
        wait_ready(c)
        assert [m["id"] for m in c.get("/v1/models").json()["data"]][-1] == "clip_vit_b_32_text"
        r = c.post("/v1/embeddings", json={"model": "clip_vit_b_32_text", "input": "x"})
        assert r.status_code == 200 and r.json()["model"] == MODEL


def test_models_lists_the_loaded_model_and_its_names(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    listed = r.json()
    assert listed["object"] == "list"
    assert listed["data"][0]["id"] == MODEL
    for model in listed["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"} and model["object"] == "model"
        assert client.get(f"/v1/models/{model['id']}").json() == model


# ------------------------------------------------------------------ errors, in OpenAI's shape


def test_an_unknown_model_is_a_404_model_not_found(client):
    error = assert_openai_error(embed(client, model="text-embedding-3-small", input="x"), 404, "model",
                                "'text-embedding-3-small'", MODEL, code="model_not_found")
    assert "/v1/models" in error["message"]
    assert_openai_error(client.get("/v1/models/text-embedding-3-small"), 404, "model", code="model_not_found")


@pytest.mark.parametrize("ids", [[49406, 320, 1929, 49407], [[49406, 320], [49406, 1929, 49407]]])
def test_token_id_arrays_are_refused_naming_langchains_setting(client, ids):
    error = assert_openai_error(embed(client, input=ids), 400, "input", "check_embedding_ctx_length=False")
    assert error["message"] == TOKEN_IDS_REFUSED


def test_dimensions_other_than_the_models_are_refused(client, tiny_clip):
    assert_openai_error(embed(client, input="x", dimensions=8), 400, "dimensions", str(tiny_clip.dim))


def test_a_bad_image_is_a_400_naming_its_place_in_input(client, png):
    body = ["a text", {"image": b64(png)}, {"image": b64(b"not an image at all")}]
    assert_openai_error(embed(client, input=body), 400, "input", "input[2]")


@pytest.mark.parametrize("body, param, needle", [
    ({"model": MODEL}, "input", "input: required"),
    ({"input": "x"}, "model", "model: required"),
    ({"model": MODEL, "input": []}, "input", "must not be empty"),
    ({"model": MODEL, "input": 3}, "input", "not a number"),
    ({"model": MODEL, "input": ["ok", None]}, "input", "input[1]"),
    ({"model": MODEL, "input": [{"text": "a", "image": "b"}]}, "input", "input[0]"),
    ({"model": MODEL, "input": [{"sound": "b"}]}, "input", "'sound'"),
    ({"model": MODEL, "input": [{"image": 5}]}, "input", "input[0].image: must be a string"),
    ({"model": MODEL, "input": [{"image": "https://example.com/cat.png"}]}, "input", "URLs are not fetched"),
    ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format", "'int8'"),
    ({"model": MODEL, "input": "x", "dimensions": "8"}, "dimensions", "must be an integer"),
    ({"model": MODEL, "input": "x", "temperature": 1}, "temperature", "unknown field"),
])
def test_malformed_requests_are_400s_naming_the_field(client, body, param, needle):
    assert_openai_error(client.post("/v1/embeddings", json=body), 400, param, needle)


def test_a_modality_the_model_lacks_is_a_400_naming_the_item(client):
    assert_openai_error(embed(client, input=["x", {"audio": b64(b"RIFF")}]), 400, "input", "input[1]")


def test_not_json_is_a_400_in_openais_shape_and_vectorize_keeps_its_own(client):
    assert_openai_error(client.post("/v1/embeddings", content=b"{nope"), 400, None, "malformed JSON")
    r = client.post("/vectorize", content=b"{nope")
    assert r.status_code == 400 and isinstance(r.json()["error"], str)


def test_too_many_items_is_a_413(client, app_settings):
    with TestClient(create_app(app_settings(max_items=2)), raise_server_exceptions=False) as c:
        wait_ready(c)
        assert_openai_error(embed(c, input=["a", "b", "c"]), 413, "input", "HANDSPRING_MAX_ITEMS")


def test_while_loading_the_v1_routes_are_503s_in_openais_shape(app_settings):
    gate = threading.Event()

    def slow_loader(settings):
        assert gate.wait(60)
        return handspring_models.load(settings.feature, settings.weights_dir, precision=settings.precision)

    with TestClient(create_app(app_settings(), loader=slow_loader), raise_server_exceptions=False) as c:
        try:
            r = embed(c, input="x")
            assert_openai_error(r, 503, None, "model is loading")
            assert r.headers["retry-after"] == "1"
            assert_openai_error(c.get("/v1/models"), 503, None, "model is loading")
        finally:
            gate.set()
        wait_ready(c)
        assert embed(c, input="x").status_code == 200


def test_an_unknown_v1_route_is_a_404_in_openais_shape(client):
    assert_openai_error(client.get("/v1/chat/completions"), 404, None, "no such route")
    assert_openai_error(client.get("/v1/embeddings"), 405, None, "POST")


def test_openapi_documents_both_apis(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/vectorize", "/v1/embeddings", "/v1/models"} <= set(paths)
    schema = paths["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "input", "encoding_format"} <= set(schema["properties"])


def test_metrics_count_the_v1_routes(client):
    embed(client, input="x")
    assert 'route="/v1/embeddings",status="200"' in client.get("/metrics").text


# ------------------------------------------------------------------ the API key


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "first-key"},
                                     {"Authorization": "Basic Zmlyc3Qta2V5"}, {"Authorization": "Bearer"}])
def test_without_a_valid_key_the_embedding_routes_are_401_in_their_own_shapes(locked, headers):
    r = locked.post("/v1/embeddings", json={"model": MODEL, "input": "x"}, headers=headers)
    assert_openai_error(r, 401, None, code="invalid_api_key")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_openai_error(locked.get("/v1/models", headers=headers), 401, None, code="invalid_api_key")
    r = locked.post("/vectorize", json={"texts": ["x"]}, headers=headers)
    assert r.status_code == 401 and isinstance(r.json()["error"], str)
    assert locked.get("/meta", headers=headers).status_code == 401


@pytest.mark.parametrize("key", KEYS)
def test_any_of_the_keys_opens_them(locked, key):
    auth = {"Authorization": f"Bearer {key}"}
    assert locked.post("/v1/embeddings", json={"model": MODEL, "input": "x"}, headers=auth).status_code == 200
    assert locked.post("/vectorize", json={"texts": ["x"]}, headers=auth).status_code == 200
    assert locked.get("/v1/models", headers=auth).status_code == 200
    assert locked.get("/meta", headers=auth).status_code == 200


def test_probes_and_metrics_stay_open(locked):
    assert locked.get("/.well-known/live").status_code == 204
    assert locked.get("/.well-known/ready").status_code == 204
    r = locked.get("/metrics")
    assert r.status_code == 200 and 'handspring_rejected_requests_total{reason="unauthorized"}' in r.text


def test_the_key_is_checked_before_the_body_is_read(locked):
    r = locked.post("/vectorize", content=b"{nope")  # malformed, but the key comes first
    assert r.status_code == 401


def test_without_keys_an_authorization_header_is_ignored(client):
    r = client.post("/v1/embeddings", json={"model": MODEL, "input": "x"}, headers={"Authorization": "Bearer anything"})
    assert r.status_code == 200


# ------------------------------------------------------------------ HANDSPRING_API_KEY


def test_api_keys_from_the_environment_are_comma_separated():
    assert Settings.from_env({"HANDSPRING_API_KEY": " one , two,,"}).api_keys == ("one", "two")
    assert Settings.from_env({}).api_keys == ()
    assert Settings.from_env({"HANDSPRING_API_KEY": "  "}).api_keys == ()


def test_a_bad_key_is_refused_without_showing_it():
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"HANDSPRING_API_KEY": "good,sécret"})
    assert "HANDSPRING_API_KEY: key 2" in str(e.value) and "sécret" not in str(e.value)


def test_the_keys_are_never_shown():
    settings = Settings.from_env({"HANDSPRING_API_KEY": "hidden-key"})
    assert "hidden-key" not in repr(settings)
    assert "hidden-key" not in json.dumps(settings.public())


# ------------------------------------------------------------------ ImageBind's other inputs


def test_imagebind_media_inputs_equal_vectorizes(app_settings, imagebind_tiny_weights):
    from tests import media

    wav, imu = media.wav(1.0, 16000), media.imu_csv(500)
    settings = app_settings(weights_dir=imagebind_tiny_weights, feature="imagebind_huge")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        wait_ready(c)
        r = c.post("/v1/embeddings", json={"model": "imagebind_huge",
                                           "input": [{"audio": b64(wav)}, "a dog barking", {"imu": b64(imu)}]})
        assert r.status_code == 200, r.text
        reference = c.post("/vectorize", json={"texts": ["a dog barking"], "audio": [b64(wav)],
                                               "imu": [b64(imu)]}).json()
        want = [reference["audioVectors"][0], reference["textVectors"][0], reference["imuVectors"][0]]
        assert np.array_equal(vectors(r.json()), np.array(want, dtype=np.float32))
        assert_openai_error(c.post("/v1/embeddings", json={"model": "imagebind_huge", "input": [{"audio": b64(b"x")}]}),
                            400, "input", "input[0]")
