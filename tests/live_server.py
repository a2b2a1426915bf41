"""A real Handspring server in a subprocess, for tests that talk to it over HTTP the way clients do
(the OpenAI SDK, the examples, a freshly installed package)."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/.well-known/ready")
        return conn.getresponse().status == 204
    except OSError:
        return False
    finally:
        conn.close()


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path, cwd: Path = REPO,
            timeout: float = 120.0) -> Iterator[str]:
    """``command`` (given ``--host 127.0.0.1 --port N``) started with ``env`` over this process's
    environment less its HANDSPRING_* variables; yields the base URL once ready, SIGTERMs it after."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HANDSPRING_")}
    environment.update(env, PYTHONUNBUFFERED="1")
    with log.open("wb") as out:
        proc = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], cwd=cwd, env=environment,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{' '.join(command)} never got ready:\n{log.read_text()}")
            time.sleep(0.1)  # polling readiness, as Weaviate and Kubernetes do
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
