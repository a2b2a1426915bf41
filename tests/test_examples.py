"""The clients in examples/, each run against a live server (the tiny random CLIP behind an API
key, so each also proves it sends one): each must print the cosine of its text and its image,
through /v1/embeddings and, where it speaks it, /vectorize, equal to the library's.

A client whose toolchain is absent (curl and jq, Node, a JDK) is skipped, saying which; `pytest
-ra` (the default here) lists the skips at the end of the run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.live_server import running

pytestmark = pytest.mark.timeout(300)

EXAMPLES = REPO / "examples"
IMAGE = EXAMPLES / "red-circle.png"
TEXT = "a red circle"
KEY = "example-key"
COSINE = re.compile(r"^(/[\w/]+).*cosine\(text, image\) = (-?\d+(?:\.\d+)?(?:e-?\d+)?)$", re.MULTILINE)


@pytest.fixture(scope="module")
def server(tiny_weights, tmp_path_factory):
    env = {"HANDSPRING_WEIGHTS_DIR": str(tiny_weights), "HANDSPRING_PRECISION": "fp32", "HANDSPRING_THREADS": "1",
           "HANDSPRING_PREPROCESS_WORKERS": "1", "HANDSPRING_API_KEY": KEY}
    with running([sys.executable, "-m", "app"], env, tmp_path_factory.mktemp("examples") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def expected_cosine(tiny_clip) -> float:
    text, image = tiny_clip.embed_texts([TEXT])[0], tiny_clip.embed_images([IMAGE.read_bytes()])[0]
    return float(np.dot(text, image) / np.linalg.norm(text) / np.linalg.norm(image))


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: this example was not run")


def run_example(command: list[str], url: str, cwd: Path, timeout: float = 180) -> str:
    env = {**os.environ, "HANDSPRING_API_KEY": KEY}
    env.pop("HANDSPRING_URL", None)
    done = subprocess.run([*command, url, str(IMAGE)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def check_cosines(output: str, expected: float, apis: set[str]) -> None:
    found = {api: float(value) for api, value in COSINE.findall(output)}
    assert set(found) == apis, output
    for api, value in found.items():
        assert value == pytest.approx(expected, abs=2e-6), f"{api}: {output}"


def test_curl(server, expected_cosine):
    need("curl", "jq", "base64")
    check_cosines(run_example(["bash", "curl.sh"], server, EXAMPLES), expected_cosine, {"/v1/embeddings", "/vectorize"})


def test_python_openai_sdk(server, expected_cosine):
    pytest.importorskip("openai", reason="the openai package is not installed: this example was not run")
    output = run_example([sys.executable, "python/openai_sdk.py"], server, EXAMPLES)
    check_cosines(output, expected_cosine, {"/v1/embeddings"})
    assert output.startswith("clip_vit_b_32, 32 dimensions, ")


def test_python_httpx(server, expected_cosine):
    pytest.importorskip("httpx", reason="httpx is not installed: this example was not run")
    output = run_example([sys.executable, "python/httpx_client.py"], server, EXAMPLES)
    check_cosines(output, expected_cosine, {"/v1/embeddings", "/vectorize"})


@pytest.fixture(scope="module")
def node_examples(tmp_path_factory) -> Path:
    """examples/node with its locked dependencies installed (`npm ci`, from the npm registry),
    in a copy: the checkout gets no node_modules."""
    need("node", "npm")
    folder = tmp_path_factory.mktemp("node") / "node"
    shutil.copytree(EXAMPLES / "node", folder, ignore=shutil.ignore_patterns("node_modules"))
    shutil.copy(IMAGE, folder.parent / IMAGE.name)
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def test_node_openai_npm(server, expected_cosine, node_examples):
    output = run_example(["node", "openai_sdk.mjs"], server, node_examples)
    check_cosines(output, expected_cosine, {"/v1/embeddings"})
    assert output.startswith("clip_vit_b_32, 32 dimensions, ")


def test_node_fetch(server, expected_cosine, node_examples):
    output = run_example(["node", "fetch.mjs"], server, node_examples)
    check_cosines(output, expected_cosine, {"/v1/embeddings", "/vectorize"})


def test_java(server, expected_cosine):
    need("java", "javac")  # `java Embed.java` compiles in memory: it needs a JDK, not only a JRE
    output = run_example(["java", "Embed.java"], server, EXAMPLES / "java")
    check_cosines(output, expected_cosine, {"/v1/embeddings", "/vectorize"})


def test_the_examples_fail_loudly_without_the_key(server):
    """They do send HANDSPRING_API_KEY (else the tests above could not pass), and say so when it is wrong."""
    env = {**os.environ, "HANDSPRING_API_KEY": "wrong"}
    done = subprocess.run([sys.executable, "python/httpx_client.py", server, str(IMAGE)], cwd=EXAMPLES, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0 and "401" in done.stderr
