"""The container image, built from this repository's Dockerfile and run: what the Dockerfile promises
(non-root, HEALTHCHECK, clean stop, ImageBind build, baked-in weights) and the same vectors as the
service outside it on the same weights.

Built with scripts/image.py: Docker where a daemon runs, else podman (offline: a debootstrapped base
and a local torch index, made once per machine). Skipped where neither engine exists, except with
HANDSPRING_IMAGE_TESTS=require (CI), where that is a failure. The first build takes minutes; later
ones reuse the engine's layer cache.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from handspring_models.runtime import panel_gemm
from scripts import image
from tests.conftest import REPO, encode
from tests.containers import Container, get_json, http_status, post_json, wait_for

pytestmark = pytest.mark.image

# Kubernetes' default grace period; the service's drain deadline is shorter, so a stop after this
# many seconds' SIGTERM means the server did not stop by itself.
STOP_TIMEOUT_S = 30
TEXTS = ["a photo of a dog", "", "a diagram of a container image " * 12]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def assert_same_vectors(got, expected) -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    assert cosines(got, expected).min() >= 0.99999
    np.testing.assert_allclose(got, expected, atol=1e-4)


# ------------------------------------------------------------------ images

@pytest.fixture(scope="module")
def engine():
    found = image.find_engine()
    if found is None:
        if os.environ.get("HANDSPRING_IMAGE_TESTS") == "require":
            pytest.fail("HANDSPRING_IMAGE_TESTS=require but there is no container engine")
        pytest.skip("no container engine: `python scripts/image.py setup` installs podman (root, Debian)")
    image.setup(install=False)
    return found


def write_weights(out: Path, *argv: str) -> Path:
    subprocess.run([sys.executable, "-m", "handspring_models.weights", *argv, "--out", str(out)],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory) -> Path:
    """A full-size random CLIP, as `python -m handspring_models.weights random` writes it."""
    return write_weights(tmp_path_factory.mktemp("image-clip") / "clip_vit_b_32", "random", "clip_vit_b_32",
                         "--seed", "7")


@pytest.fixture(scope="module")
def clip_image(engine, clip_weights) -> str:
    tag = "localhost/handspring-test:clip"
    image.build(tag, "clip_vit_b_32", weights=clip_weights, install=False)
    return tag


@pytest.fixture(scope="module")
def bind_weights(tmp_path_factory) -> Path:
    """A tiny random ImageBind (the fidelity tests' architecture), every modality."""
    from handspring_models.weights import random_weights
    from tests.imagebind_cases import TINY

    out = tmp_path_factory.mktemp("image-bind") / "imagebind_huge"
    random_weights("imagebind_huge", out, seed=3, architecture=TINY)
    return out


@pytest.fixture(scope="module")
def bind_image(engine, bind_weights) -> str:
    tag = "localhost/handspring-test:bind"
    image.build(tag, "imagebind_huge", weights=bind_weights, install=False)
    return tag


def healthcheck(engine, tag: str) -> dict:
    """The image's HEALTHCHECK as the engine stored it (durations in nanoseconds)."""
    config = json.loads(engine.run("image", "inspect", tag).stdout)[0]
    check = (config.get("Config") or {}).get("Healthcheck") or config.get("Healthcheck")  # Docker; podman
    assert check and check.get("Test"), f"{tag} has no HEALTHCHECK (podman needs --format docker)"
    return check


@pytest.fixture
def run(engine):
    """``run(tag, **env)``: a started container, removed after the test."""
    started: list[Container] = []

    def start(tag: str, **env: str) -> Container:
        container = Container(engine, tag, env)
        started.append(container)
        return container.start()

    yield start
    for container in started:
        container.remove()


@pytest.fixture(scope="module")
def clip_container(engine, clip_image):
    """One running CLIP container shared by the read-only tests, ready (``ready_after``: seconds
    from `run`); waited for up to three start periods, so that a slow start fails its own test."""
    container = Container(engine, clip_image).start()
    try:
        container.ready_after = container.wait_ready(3 * healthcheck(engine, clip_image)["StartPeriod"] / 1e9)
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="module")
def host_service(clip_weights, tmp_path_factory):
    """The same weights served outside any container: `python -m app` from this checkout."""
    from tests.test_app_server import free_port

    port = free_port()
    log = tmp_path_factory.mktemp("host-service") / "server.log"
    env = {**os.environ, "HANDSPRING_WEIGHTS_DIR": str(clip_weights), "HANDSPRING_FEATURE": "clip_vit_b_32"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready():
            assert proc.poll() is None, f"the host service exited:\n{log.read_text()}"
            return http_status(url + "/.well-known/ready") == 204
        wait_for(ready, 180, what="host service ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


# ------------------------------------------------------------------ the CLIP image

def test_server_runs_as_non_root(clip_container):
    status = clip_container.exec("cat", "/proc/1/status").stdout  # PID 1 is the server (exec-form CMD)
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert "0" not in uids, f"the server runs with uid {uids}"
    assert clip_container.exec("id", "-u").stdout.strip() != "0"


def test_ready_within_the_healthcheck_start_period(engine, clip_image, clip_container):
    start_period = healthcheck(engine, clip_image)["StartPeriod"] / 1e9
    assert clip_container.ready_after <= start_period, \
        f"ready {clip_container.ready_after:.0f} s after `run`, past the {start_period:.0f} s start period"


def test_healthcheck_passes(engine, clip_container):
    if engine.name == "podman":
        result = engine.run("healthcheck", "run", clip_container.name, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    else:  # Docker runs the check itself, every interval
        wait_for(lambda: clip_container.inspect()["State"]["Health"]["Status"] == "healthy", 120,
                 what="Docker's health status")


def test_vectors_equal_the_service_outside_the_container(clip_container, host_service, photos):
    images = [base64.b64encode(encode(photos[name], fmt)).decode()
              for name, fmt in (("astronaut_rgb", "JPEG"), ("chelsea_rgb_451x300", "PNG"), ("camera_L", "PNG"))]
    body = {"texts": TEXTS, "images": images}
    inside = post_json(clip_container.url + "/vectorize", body)
    outside = post_json(host_service + "/vectorize", body)
    assert len(inside["textVectors"]) == len(TEXTS) and len(inside["imageVectors"]) == len(images)
    assert_same_vectors(inside["textVectors"], outside["textVectors"])
    assert_same_vectors(inside["imageVectors"], outside["imageVectors"])


def test_meta_describes_the_same_model_as_outside(clip_container, host_service):
    inside, outside = get_json(clip_container.url + "/meta"), get_json(host_service + "/meta")
    for key in ("model", "feature", "modalities", "dim", "normalized", "version"):
        assert inside[key] == outside[key], key
    assert inside["weights"]["manifest_sha256"] == outside["weights"]["manifest_sha256"]
    assert inside["weights"]["dir"] == "/weights/clip_vit_b_32"
    assert inside["precision"]["resolved"] == outside["precision"]["resolved"]


def test_the_image_runs_the_same_linear_kernels_as_outside(clip_container, host_service):
    # The panel kernel is compiled in a build stage of its own; the runtime image must load it.
    inside, outside = get_json(clip_container.url + "/meta"), get_json(host_service + "/meta")
    assert inside["linear_kernels"] == outside["linear_kernels"]
    assert inside["panel_kernel_build"] == outside["panel_kernel_build"]
    if panel_gemm.library() is not None and inside["precision"]["runs"] == "fp32":  # auto may be bf16 here
        assert inside["linear_kernels"]["panel"] > 0
        assert inside["panel_kernel_build"] == panel_gemm.native_isa()


def test_the_image_loads_the_panel_kernel_build_this_cpu_runs(engine, clip_image):
    # Whatever precision the served model runs: the compiled library itself, in the slim image.
    code = "from handspring_models.runtime import panel_gemm; print(panel_gemm.native_isa())"
    done = engine.run("run", "--rm", "--entrypoint", "python", clip_image, "-c", code, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(panel_gemm.native_isa())


def test_the_try_page_is_served_from_the_image(clip_container):
    """GET / and its assets, the very files of app/static (the image must copy them)."""
    import urllib.request

    from app.ui import ASSETS, STATIC

    for path, file in [("/", STATIC / "index.html"), *((f"/ui/{name}", STATIC / name) for name in ASSETS)]:
        with urllib.request.urlopen(clip_container.url + path, timeout=30) as response:
            assert response.status == 200 and response.read() == file.read_bytes(), path


def test_sigterm_ends_it_with_status_zero(clip_image, run):
    container = run(clip_image)
    container.wait_ready(120)
    container.stop(STOP_TIMEOUT_S)  # SIGTERM; SIGKILL only after STOP_TIMEOUT_S
    state = container.inspect()["State"]
    assert not state["Running"]
    assert state["ExitCode"] == 0, f"exit status {state['ExitCode']}:\n{container.logs()}"


def test_local_weights_are_baked_in_and_verify(engine, clip_image, clip_weights):
    folder = "/weights/clip_vit_b_32"
    verify = engine.run("run", "--rm", clip_image, "python", "-m", "handspring_models.weights", "verify", folder,
                        check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    manifest = engine.run("run", "--rm", clip_image, "cat", f"{folder}/manifest.json").stdout
    assert json.loads(manifest) == json.loads((clip_weights / "manifest.json").read_text())


# ------------------------------------------------------------------ the ImageBind image

def test_imagebind_image_serves_a_bind_body(bind_image, bind_weights, run, photos):
    import handspring_models
    from tests.media import wav

    audio = wav(seconds=2.5)
    body = {"texts": TEXTS[:2], "images": [base64.b64encode(encode(photos["coffee_rgb_600x400"], "JPEG")).decode()],
            "audio": [base64.b64encode(audio).decode()]}
    container = run(bind_image, HANDSPRING_PRECISION="fp32")
    container.wait_ready(120)
    meta = get_json(container.url + "/meta")
    assert meta["model"] == "imagebind_huge" and set(meta["modalities"]) >= {"text", "image", "audio"}

    answer = post_json(container.url + "/vectorize", body)
    library = handspring_models.load("imagebind_huge", bind_weights, "fp32")
    assert_same_vectors(answer["textVectors"], library.embed_texts(body["texts"]))
    assert_same_vectors(answer["imageVectors"], library.embed_images([encode(photos["coffee_rgb_600x400"], "JPEG")]))
    assert_same_vectors(answer["audioVectors"], library.embed_audio([audio]))


# ------------------------------------------------------------------ the openvino image

@pytest.fixture(scope="module")
def openvino_image(engine, tiny_weights) -> str:
    """BACKEND=openvino, with the tiny CLIP baked in: what the build argument adds is the same at any size."""
    tag = "localhost/handspring-test:openvino"
    image.build(tag, "clip_vit_b_32", weights=tiny_weights, build_args={"BACKEND": "openvino"}, install=False)
    return tag


def test_openvino_image_serves_towers_converted_at_build_time(engine, openvino_image, tiny_weights, run, photos):
    import handspring_models

    baked = engine.run("run", "--rm", openvino_image, "ls", "/weights/clip_vit_b_32/openvino").stdout.split()
    assert sorted(name.split("-")[0] for name in baked) == ["image", "text"]
    container = run(openvino_image, HANDSPRING_PRECISION="fp32")
    container.wait_ready(120)
    assert get_json(container.url + "/meta")["backend"] == "openvino"
    # Nothing converted at start: it would have gone to the user's cache, /weights being read-only
    assert container.exec("test", "-e", "/home/handspring/.cache/handspring/openvino", check=False).returncode == 1

    jpeg = encode(photos["coffee_rgb_600x400"], "JPEG")
    answer = post_json(container.url + "/vectorize", {"texts": TEXTS, "images": [base64.b64encode(jpeg).decode()]})
    torch_backend = handspring_models.load("clip_vit_b_32", tiny_weights, "fp32")
    assert_same_vectors(answer["textVectors"], torch_backend.embed_texts(TEXTS))
    assert_same_vectors(answer["imageVectors"], torch_backend.embed_images([jpeg]))
