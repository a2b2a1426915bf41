"""The service with an ImageBind feature: Weaviate's multi2vec-bind contract (all seven fields,
no Content-Type header), on the tiny random-weight ImageBind converted by our converter."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

import handspring_models
from app.main import create_app
from app.settings import Settings, SettingsError
from tests import media
from tests.test_app_contract import b64, post, wait_ready

pytestmark = pytest.mark.timeout(180)

@pytest.fixture(scope="module")
def bind_settings(app_settings, imagebind_tiny_weights):
    """``app_settings`` serving the tiny ImageBind (whole model unless ``feature=`` says otherwise)."""

    def make(**overrides):
        return app_settings(**{"weights_dir": imagebind_tiny_weights, "feature": "imagebind_huge", **overrides})

    return make


@pytest.fixture(scope="module")
def client(bind_settings):
    with TestClient(create_app(bind_settings()), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def files(photos) -> dict[str, list[bytes]]:
    from tests.conftest import encode

    return {
        "image": [encode(photos["astronaut_rgb"], "PNG"), encode(photos["camera_L"], "JPEG")],
        "audio": [media.wav(1.0, 16000), media.wav(4.5, 44100, 220.0, channels=2)],
        "video": [media.video(2.5)],
        "imu": [media.imu_csv(500), media.imu_csv(2600)],
        "thermal": [media.gray_png(120, 90)],
        "depth": [media.gray_png(90, 120, mode="I;16")],
    }


def bind_body(files, texts=("a dog barking", "")) -> dict:
    body = {"texts": list(texts)}
    body.update({("images" if m == "image" else m): [b64(f) for f in items] for m, items in files.items()})
    return body


def test_meta_names_the_model_modalities_and_licence(client):
    meta = client.get("/meta").json()
    assert meta["model"] == "imagebind_huge"
    assert sorted(meta["modalities"]) == sorted(["text", "image", "audio", "video", "depth", "thermal", "imu"])
    assert "CC BY-NC-SA 4.0" in meta["weights"]["license"]
    assert meta["normalized"] is True and "unit" in meta["output"]


def test_all_seven_fields_in_one_body(client, files, imagebind_tiny_weights):
    r = post(client, bind_body(files))
    assert r.status_code == 200, r.text
    answer = r.json()
    library = handspring_models.load("imagebind_huge", imagebind_tiny_weights, "fp32")
    expected = {"text": library.embed_texts(["a dog barking", ""])}
    for modality, items in files.items():
        expected[modality] = library.embed(modality, items)
    for modality, vectors in expected.items():
        got = np.array(answer[f"{modality}Vectors"])
        assert got.shape == vectors.shape, modality
        np.testing.assert_allclose(got, vectors, atol=1e-5, err_msg=modality)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_omitted_fields_answer_empty_lists(client, files):
    r = post(client, {"audio": [b64(files["audio"][0])]})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert len(answer["audioVectors"]) == 1
    assert answer["textVectors"] == [] and answer["imageVectors"] == [] and answer["videoVectors"] == []


@pytest.mark.parametrize("field, data, needle", [
    ("audio", b"RIFF\x00\x00\x00\x00WAVEnot really", "audio[0]"),
    ("audio", b"", "audio[0]"),
    ("video", b"\x00\x00\x00\x18ftypmp42 truncated", "video[0]"),
    ("video", media.wav(0.5), "video[0]"),
    ("imu", b"gyro_x,gyro_y\n1,2\n", "imu[0]"),
    ("imu", b"a,b,c,d,e,f\n1,2,3,nan,5,6\n", "imu[0]"),
    ("depth", b"not a png", "depth[0]"),
    ("thermal", b"\x89PNG\r\n\x1a\n", "thermal[0]"),
])
def test_bad_media_is_a_422_naming_the_item(client, field, data, needle):
    r = post(client, {field: [b64(data)]})
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]
    assert client.get("/.well-known/ready").status_code == 204


def test_bad_base64_in_a_bind_field_is_a_422(client):
    r = post(client, {"audio": ["%%%not base64%%%"]})
    assert r.status_code == 422 and "audio[0]" in r.json()["error"]


def test_a_one_modality_feature_refuses_the_others(bind_settings, files):
    with TestClient(create_app(bind_settings(feature="imagebind_huge_imu")), raise_server_exceptions=False) as c:
        wait_ready(c)
        assert post(c, {"imu": [b64(files["imu"][0])]}).status_code == 200
        r = post(c, {"audio": [b64(files["audio"][0])]})
        assert r.status_code == 422
        assert "imagebind_huge_audio" in r.json()["error"]


def test_raw_outputs_when_normalize_is_off(bind_settings, files):
    with TestClient(create_app(bind_settings(normalize=False)), raise_server_exceptions=False) as c:
        wait_ready(c)
        assert c.get("/meta").json()["normalized"] is False
        answer = post(c, {"imu": [b64(files["imu"][0])], "images": [b64(files["image"][0])]}).json()
    np.testing.assert_allclose(np.linalg.norm(answer["imuVectors"], axis=1), 5.0, rtol=1e-4)  # IMU's fixed scale
    np.testing.assert_allclose(np.linalg.norm(answer["imageVectors"], axis=1), 1.0, rtol=1e-4)  # vision: none


def test_normalize_off_gives_clip_its_raw_projections(app_settings):
    with TestClient(create_app(app_settings(normalize=False)), raise_server_exceptions=False) as c:
        wait_ready(c)
        meta = c.get("/meta").json()
        assert meta["normalized"] is False and meta["weaviate_default_normalized"] is True
        answer = post(c, {"texts": ["a dog", "a photo of a cat on a mat"]}).json()
    norms = np.linalg.norm(answer["textVectors"], axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-3)


def test_media_longer_than_the_limit_is_a_422(bind_settings, files):
    with TestClient(create_app(bind_settings(max_media_seconds=2.0)), raise_server_exceptions=False) as c:
        wait_ready(c)
        assert c.get("/meta").json()["limits"]["max_media_seconds"] == 2.0
        assert post(c, {"audio": [b64(files["audio"][0])]}).status_code == 200  # 1 s
        r = post(c, {"audio": [b64(files["audio"][1])]})  # 4.5 s
        assert r.status_code == 422 and "audio[0]" in r.json()["error"], r.text
        r = post(c, {"video": [b64(files["video"][0])]})  # 2.5 s
        assert r.status_code == 422 and "video[0]" in r.json()["error"], r.text


def test_max_media_seconds_from_the_environment():
    assert Settings.from_env({"HANDSPRING_MAX_MEDIA_SECONDS": "30"}).max_media_seconds == 30.0
    with pytest.raises(SettingsError, match="MAX_MEDIA_SECONDS"):
        Settings.from_env({"HANDSPRING_MAX_MEDIA_SECONDS": "-1"})
