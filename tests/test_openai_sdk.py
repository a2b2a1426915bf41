"""The official OpenAI Python SDK against a real server (``handspring serve`` and ``uvicorn
app.main:app``, the tiny random CLIP): texts and images, base64 as the SDK asks by default,
errors raised as the SDK's own exception classes, vectors equal to /vectorize's, and the API key."""

from __future__ import annotations

import base64
import sys

import httpx
import numpy as np
import pytest

from tests.conftest import encode
from tests.live_server import running

openai = pytest.importorskip("openai", reason="the openai SDK is not installed (requirements-dev.txt)")
OpenAI = openai.OpenAI

pytestmark = pytest.mark.timeout(300)

MODEL = "clip_vit_b_32"
KEY = "sdk-test-key"
LAUNCHERS = {
    "handspring serve": [sys.executable, "-m", "handspring", "serve"],
    "uvicorn app.main:app": [sys.executable, "-m", "uvicorn", "app.main:app"],
}


def server_env(tiny_weights, **extra) -> dict[str, str]:
    return {"HANDSPRING_WEIGHTS_DIR": str(tiny_weights), "HANDSPRING_PRECISION": "fp32", "HANDSPRING_THREADS": "1",
            "HANDSPRING_PREPROCESS_WORKERS": "2", **extra}


@pytest.fixture(scope="module", params=list(LAUNCHERS))
def server(request, tiny_weights, tmp_path_factory):
    log = tmp_path_factory.mktemp("sdk") / "server.log"
    with running(LAUNCHERS[request.param], server_env(tiny_weights), log) as url:
        yield url


@pytest.fixture(scope="module")
def locked_server(tiny_weights, tmp_path_factory):
    log = tmp_path_factory.mktemp("sdk-locked") / "server.log"
    with running(LAUNCHERS["handspring serve"], server_env(tiny_weights, HANDSPRING_API_KEY=f"other,{KEY}"),
                 log) as url:
        yield url


def sdk(url: str, key: str = "anything") -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def image(photos) -> str:
    return base64.b64encode(encode(photos["chelsea_rgb_451x300"], "JPEG", quality=90)).decode()


TEXTS = ["a photo of a cat", "two dogs playing in the snow"]


def as_array(response) -> np.ndarray:
    return np.array([item.embedding for item in response.data], dtype=np.float32)


def test_texts_and_an_image_in_one_call(server, image, tiny_clip):
    response = sdk(server).embeddings.create(model=MODEL, input=[*TEXTS, {"image": image}])  # type: ignore[list-item]
    assert response.model == MODEL and [item.index for item in response.data] == [0, 1, 2]
    got = as_array(response)
    np.testing.assert_allclose(got[:2], tiny_clip.embed_texts(TEXTS), atol=1e-5)
    np.testing.assert_allclose(got[2:], tiny_clip.embed_images([base64.b64decode(image)]), atol=1e-5)
    assert response.usage.prompt_tokens == sum(len(tiny_clip.prepare("text", t)) for t in TEXTS)


def test_one_string(server, tiny_clip):
    response = sdk(server).embeddings.create(model=MODEL, input=TEXTS[0])
    np.testing.assert_allclose(as_array(response), tiny_clip.embed_texts(TEXTS[:1]), atol=1e-5)


def test_base64_as_the_sdk_asks_by_default_decodes_to_the_same_floats(server, image):
    inputs = [*TEXTS, {"image": image}]
    client = sdk(server)
    by_default = client.embeddings.create(model=MODEL, input=inputs)  # the SDK asks for base64 and decodes it
    as_floats = client.embeddings.create(model=MODEL, input=inputs, encoding_format="float")
    assert np.array_equal(as_array(by_default), as_array(as_floats))
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=inputs, encoding_format="base64")
    assert isinstance(raw.http_response.json()["data"][0]["embedding"], str)


def test_vectors_equal_vectorizes(server, image):
    response = sdk(server).embeddings.create(model=MODEL, input=[*TEXTS, {"image": image}])
    reference = httpx.post(server + "/vectorize", json={"texts": TEXTS, "images": [image]}, timeout=60).json()
    want = np.array([*reference["textVectors"], *reference["imageVectors"]], dtype=np.float32)
    assert np.array_equal(as_array(response), want)


def test_models_list_and_retrieve(server):
    client = sdk(server)
    listed = [model.id for model in client.models.list()]
    assert listed[0] == MODEL
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("text-embedding-3-small")


def test_an_unknown_model_is_the_sdks_not_found_error(server):
    with pytest.raises(openai.NotFoundError) as e:
        sdk(server).embeddings.create(model="text-embedding-3-small", input="x")
    assert e.value.status_code == 404 and e.value.code == "model_not_found" and e.value.param == "model"
    assert e.value.type == "invalid_request_error" and MODEL in e.value.message


def test_token_ids_are_the_sdks_bad_request_error(server):
    with pytest.raises(openai.BadRequestError) as e:
        sdk(server).embeddings.create(model=MODEL, input=[[49406, 320, 49407]])
    assert e.value.param == "input" and "check_embedding_ctx_length=False" in e.value.message


def test_dimensions_are_the_sdks_bad_request_error(server):
    with pytest.raises(openai.BadRequestError) as e:
        sdk(server).embeddings.create(model=MODEL, input="x", dimensions=8)
    assert e.value.param == "dimensions"


def test_a_bad_image_is_the_sdks_bad_request_error_naming_it(server):
    with pytest.raises(openai.BadRequestError) as e:
        sdk(server).embeddings.create(model=MODEL, input=["x", {"image": "bm90IGFuIGltYWdl"}])  # type: ignore[list-item]
    assert e.value.param == "input" and "input[1]" in e.value.message


def test_without_a_key_on_the_server_any_key_will_do(server):
    assert sdk(server, key="whatever").embeddings.create(model=MODEL, input="x").data


def test_with_keys_on_the_server_a_wrong_key_is_the_sdks_authentication_error(locked_server):
    with pytest.raises(openai.AuthenticationError) as e:
        sdk(locked_server, key="wrong").embeddings.create(model=MODEL, input="x")
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        sdk(locked_server, key="wrong").models.list()


def test_with_keys_on_the_server_any_of_them_works(locked_server, tiny_clip):
    for key in ("other", KEY):
        response = sdk(locked_server, key=key).embeddings.create(model=MODEL, input=TEXTS[0])
        np.testing.assert_allclose(as_array(response), tiny_clip.embed_texts(TEXTS[:1]), atol=1e-5)


def test_with_keys_on_the_server_the_probes_stay_open(locked_server):
    assert httpx.get(locked_server + "/.well-known/ready").status_code == 204
    assert httpx.get(locked_server + "/metrics").status_code == 200
    r = httpx.post(locked_server + "/vectorize", json={"texts": ["x"]})
    assert r.status_code == 401 and isinstance(r.json()["error"], str)
