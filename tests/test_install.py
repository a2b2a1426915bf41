"""``pip install .`` into a new, empty venv, as a user would: the library alone imports without
the server's dependencies, and with the ``server`` extra the ``handspring`` command serves.

The exact versions of requirements.txt are given as constraints, as make and the Docker image
give them: torch's range admits only what lies on this machine's disk (the CPU build), and the
rest comes from PyPI through pip's cache. Minutes, mostly unpacking torch: marked ``install``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from handspring_models.runtime import panel_gemm
from tests.conftest import REPO
from tests.live_server import running

pytestmark = [pytest.mark.install, pytest.mark.timeout(1200)]

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def pip(venv: Path, *args: str) -> None:
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                           "--quiet", "-c", str(REPO / "requirements.txt"), *args],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def source_tree(dest: Path) -> Path:
    """What a fresh clone holds (tracked files, and new ones not ignored), copied: pip builds in
    the tree it is given, and the checkout stays clean."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def run(venv: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True, timeout=300,
                          check=False, cwd=venv.parent, **kwargs)


@pytest.fixture(scope="module")
def library_venv(tmp_path_factory) -> Path:
    """A new venv (no system site-packages) with `pip install .`: the library alone."""
    root = tmp_path_factory.mktemp("install")
    src = source_tree(root / "src")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip(venv, str(src))
    return venv


def test_the_library_imports_without_the_servers_dependencies(library_venv):
    code = ("import importlib.util, handspring_models; "
            "print(handspring_models.__version__, handspring_models.__file__, "
            "[m for m in ('fastapi', 'uvicorn', 'av', 'pyarrow') if importlib.util.find_spec(m)])")
    done = run(library_venv, "python", "-c", code)
    assert done.returncode == 0, done.stderr
    version, location, server_modules = done.stdout.split(" ", 2)
    assert version == VERSION
    assert "site-packages" in location and str(REPO) not in location  # the installed copy, not the checkout
    assert server_modules.strip() == "[]"
    assert (Path(location).parent / "py.typed").is_file()


def test_pip_builds_the_panel_kernel(library_venv):
    # setup.py compiles it where there is a C compiler; this checkout's editable install did.
    if panel_gemm.library() is None:
        pytest.skip("no panel kernel in this checkout either (no C compiler, or no AVX2)")
    code = "from handspring_models.runtime import panel_gemm; print(panel_gemm.library() is not None)"
    done = run(library_venv, "python", "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_the_command_says_what_to_install_for_serve(library_venv):
    assert run(library_venv, "handspring", "--version").stdout.strip() == f"handspring {VERSION}"
    done = run(library_venv, "handspring", "serve")
    assert done.returncode == 1 and "pip install 'handspring[server]'" in done.stderr


def test_weights_go_to_the_users_cache_not_site_packages(library_venv, tmp_path):
    done = run(library_venv, "handspring", "weights", "list", env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert f"no weights folders in {tmp_path}/.cache/handspring" in done.stdout


def test_handspring_serve_answers_both_apis(library_venv, tiny_weights, tiny_clip, tmp_path):
    pip(library_venv, f"{library_venv.parent / 'src'}[server]")
    env = {"HANDSPRING_WEIGHTS_DIR": str(tiny_weights), "HANDSPRING_PRECISION": "fp32", "HANDSPRING_THREADS": "1"}
    with running([str(library_venv / "bin" / "handspring"), "serve"], env, tmp_path / "serve.log",
                 cwd=tmp_path) as url:
        body = json.dumps({"model": "clip_vit_b_32", "input": ["a photo of a cat"]}).encode()
        with urllib.request.urlopen(urllib.request.Request(url + "/v1/embeddings", body), timeout=30) as r:
            answer = json.load(r)
        with urllib.request.urlopen(url + "/meta", timeout=30) as r:
            meta = json.load(r)
        for path, file in (("/", "index.html"), ("/ui/app.js", "app.js")):  # the try-it page, from the package
            with urllib.request.urlopen(url + path, timeout=30) as r:
                assert r.read() == (REPO / "app" / "static" / file).read_bytes(), path
    np.testing.assert_allclose([answer["data"][0]["embedding"]], tiny_clip.embed_texts(["a photo of a cat"]),
                               atol=1e-5)
    assert meta["version"] == VERSION
