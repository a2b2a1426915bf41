"""A real server process (``uvicorn app.main:app`` and ``python -m app``) on a loopback port, driven
the way Weaviate drives it:
start-up polling of /.well-known/ready with 500 ms timeouts, then /vectorize with no
Content-Type header, then SIGTERM. Plus: bad configuration stops start-up with a clear message."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, encode

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAUNCHERS = {  # both ways to run the service: the same app, the same behaviour
    "uvicorn": ["-m", "uvicorn", "app.main:app"],
    "python -m app": ["-m", "app"],
}


@pytest.fixture(params=list(LAUNCHERS))
def launcher(request) -> list[str]:
    return LAUNCHERS[request.param]


def start(env_overrides: dict, log: Path, port: int, launcher: list[str] = LAUNCHERS["uvicorn"]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSPRING_")}
    env.update(env_overrides)
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [sys.executable, *launcher, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )


def request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 0.5):
    """One HTTP request with exactly the headers given (http.client adds only Host, Content-Length
    and Accept-Encoding: no Content-Type, like Weaviate's bind client)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise


def test_weaviate_startup_polling_then_vectorize_without_content_type(tiny_weights, tiny_clip, photos, tmp_path,
                                                                     launcher):
    port, log = free_port(), tmp_path / "server.log"
    proc = start({"HANDSPRING_WEIGHTS_DIR": str(tiny_weights), "HANDSPRING_PRECISION": "fp32",
                  "HANDSPRING_THREADS": "1", "HANDSPRING_PREPROCESS_WORKERS": "2"}, log, port, launcher)
    try:
        # Weaviate (modules/multi2vec-clip/clients/startup.go): GET ready, 500 ms timeout per try,
        # anything > 299 or no answer = not yet; it retries once a second (faster here) for 120 s.
        statuses: list = []
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"never ready: {statuses[-5:]}\n{log.read_text()}"
            try:
                status, body = request(port, "GET", "/.well-known/ready", timeout=0.5)
            except (ConnectionRefusedError, TimeoutError, http.client.HTTPException, OSError) as e:
                statuses.append(type(e).__name__)
            else:
                statuses.append(status)
                if status <= 299:
                    break
                assert status == 503 and json.loads(body)["error"] == "model is loading"
            time.sleep(0.1)
        assert statuses[-1] == 204
        assert request(port, "HEAD", "/.well-known/live")[0] == 204

        image = encode(photos["chelsea_tall_small"], "PNG")
        payload = json.dumps({"texts": ["a photo of a cat", "a dog"], "images": [base64.b64encode(image).decode()]})
        status, body = request(port, "POST", "/vectorize", payload.encode(), timeout=30)
        assert status == 200, body
        out = json.loads(body)
        np.testing.assert_allclose(out["textVectors"], tiny_clip.embed_texts(["a photo of a cat", "a dog"]), atol=1e-5)
        np.testing.assert_allclose(out["imageVectors"], tiny_clip.embed_images([image]), atol=1e-5)

        status, body = request(port, "POST", "/vectorize", b'{"texts": [null]}', timeout=30)
        assert status == 422 and json.loads(body) == {"error": "texts[0]: must be a string, not null"}
        status, body = request(port, "GET", "/meta", timeout=30)
        assert status == 200 and json.loads(body)["dim"] == 32
        assert request(port, "GET", "/.well-known/ready")[0] == 204
    finally:
        code = stop(proc)
    text = log.read_text()
    # uvicorn re-raises the SIGTERM it handled once shut down, so -SIGTERM is a clean exit too
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in text, text
    loaded = [line for line in text.splitlines() if "handspring.app: loaded " in line]
    assert len(loaded) == 1, text  # ONE start-up line saying what was loaded
    for word in ("clip_vit_b_32", "precision=fp32", str(tiny_weights), tiny_clip.manifest_sha256, "threads=1"):
        assert word in loaded[0]


@pytest.mark.parametrize("env, message", [
    ({"HANDSPRING_MAX_BATCH": "lots", "HANDSPRING_PRECISION": "fp8"}, ["HANDSPRING_MAX_BATCH", "HANDSPRING_PRECISION"]),
    ({"HANDSPRING_WEIGHTS_DIR": "/nonexistent/weights"}, ["/nonexistent/weights", "does not exist"]),
])
def test_bad_configuration_stops_startup_with_a_clear_message(env, message, tmp_path, launcher):
    port, log = free_port(), tmp_path / "server.log"
    proc = start(env, log, port, launcher)
    try:
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert code != 0, text
    errors = [line for line in text.splitlines() if "ERROR handspring.app:" in line]
    assert errors, text
    for word in message:
        assert word in errors[0], text


def start_slow_loading_server(tiny_weights, log: Path, port: int, as_launcher: bool) -> subprocess.Popen:
    """A server whose load runs torch's native code for a minute (tests/slow_load_server.py), once
    it answers /.well-known/live."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSPRING_")}
    proc = subprocess.Popen([sys.executable, "-m", "tests.slow_load_server", str(port), str(tiny_weights),
                             *(["launcher"] if as_launcher else [])],
                            cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            if request(port, "GET", "/.well-known/live")[0] == 204:
                return proc
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(log.read_text())
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 0), (signal.SIGTERM, -signal.SIGTERM)], ids=["SIGINT", "SIGTERM"])
def test_stopping_while_the_model_loads_ends_at_once_as_uvicorn_ends(tiny_weights, tmp_path, sig, code):
    """The load thread is inside torch when the server stops. The process ends as uvicorn ends any
    stopped server (status 0 after Ctrl+C; SIGTERM re-raised), not by SIGABRT (134) when the C++
    runtime meets the thread at interpreter exit, which Ctrl+C did before the launchers' exit guard."""
    port, log = free_port(), tmp_path / "server.log"
    proc = start_slow_loading_server(tiny_weights, log, port, as_launcher=True)
    try:
        assert request(port, "GET", "/.well-known/ready")[0] == 503  # still loading
        started = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(30) == code, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - started < 10  # did not wait out the minute-long load
    assert "stopped (was loading)" in log.read_text()


def test_an_embedded_app_leaves_the_exit_to_its_process(tiny_weights, tmp_path):
    port, log = free_port(), tmp_path / "server.log"
    proc = start_slow_loading_server(tiny_weights, log, port, as_launcher=False)
    assert stop(proc) == -signal.SIGTERM
    output = log.read_text()
    assert "stopped (was loading)" in output and "exiting while the model is still loading" not in output
