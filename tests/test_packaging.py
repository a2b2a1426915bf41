"""Packaging checks that need no Docker engine and no network: the Dockerfile, .dockerignore,
weaviate-example/docker-compose.yml and weaviate-example/example.py, read as text and checked against
each other and against the repository (what the image copies exists, the ports agree, Weaviate's
module is wired to the service that the Dockerfile builds).

What only a real build can show (that the base image, the PyTorch CPU index and the Hugging Face Hub
answer, that the image starts) is not tested here: see weaviate-example/README.md.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.util
import io
import json
import posixpath
import re
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
EXAMPLE_DIR = REPO / "weaviate-example"
COMPOSE = EXAMPLE_DIR / "docker-compose.yml"
EXAMPLE = EXAMPLE_DIR / "example.py"
WEIGHTS_SOURCES = ("download", "local", "random")  # the WEIGHTS_SRC values the Dockerfile documents


# ------------------------------------------------------------------ a small Dockerfile reader

@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # continuation lines joined
    line: int

    def flags(self) -> dict[str, str]:
        """Leading --name=value flags (COPY --from=..., HEALTHCHECK --interval=...)."""
        out = {}
        for word in self.args.split():
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            out[name] = value
        return out

    def words(self) -> list[str]:
        """The arguments after the flags (shell-split, or the JSON array of the exec form)."""
        rest = self.args
        while rest.startswith("--"):
            rest = rest.split(None, 1)[1] if " " in rest else ""
        rest = rest.strip()
        if rest.startswith("["):
            return json.loads(rest)
        return shlex.split(rest)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        matches = [s for s in self.stages if s.name == name]
        assert matches, f"no stage named {name!r}; stages: {[s.name for s in self.stages]}"
        return matches[0]

    def expand(self, text: str, extra: dict[str, str] | None = None) -> str:
        """${VAR} / $VAR with the ARG defaults (what a build without --build-arg sees)."""
        values = {**self.global_args, **(extra or {})}

        def sub(m: re.Match) -> str:
            name = m.group(1) or m.group(2)
            assert name in values, f"{name} has no default in the Dockerfile"
            return values[name]

        return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, text)

    def stage_args(self, stage: Stage) -> dict[str, str]:
        """ARG defaults visible inside a stage: redeclared globals, and the stage's own ARGs."""
        out = {}
        for ins in stage.all("ARG"):
            name, _, default = ins.args.partition("=")
            out[name] = default if default else self.global_args.get(name, "")
        return out


def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):  # comment lines inside a continuation are dropped
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append((start, buffer + stripped))
        buffer = ""
    assert not buffer, "the Dockerfile ends inside a line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text in logical:
        keyword, _, args = text.partition(" ")
        ins = Instruction(keyword.upper(), args.strip(), number)
        if ins.keyword == "FROM":
            words = ins.words()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert ins.keyword == "ARG", f"line {number}: only ARG may come before the first FROM"
            name, _, default = ins.args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(global_args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return read_dockerfile()


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# ------------------------------------------------------------------ .dockerignore, as Docker reads it

def dockerignore_patterns(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern]]:
    """(is_exception, regex) per line, following moby/patternmatcher: paths are cleaned, a leading
    slash dropped, ``*`` and ``?`` stay within one path element, ``**`` spans any number of them."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = posixpath.normpath(line[1:].strip() if exception else line).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            c = pattern[i]
            if c == "*" and pattern[i + 1:i + 2] == "*":
                i += 1
                if pattern[i + 1:i + 2] == "/":
                    i += 1
                regex += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            elif c == "*":
                regex += "[^/]*"
            elif c == "?":
                regex += "[^/]"
            elif c == "[":
                end = pattern.index("]", i)
                regex += pattern[i:end + 1]
                i = end
            elif c == "\\" and i + 1 < len(pattern):
                i += 1
                regex += re.escape(pattern[i])
            else:
                regex += re.escape(c)
            i += 1
        out.append((exception, re.compile(f"^{regex}$")))
    return out


def is_ignored(relpath: str, patterns=None) -> bool:
    """Whether Docker leaves ``relpath`` out of the build context: the last pattern that matches the
    path, or one of its parent folders, decides."""
    patterns = dockerignore_patterns() if patterns is None else patterns
    parts = relpath.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for exception, regex in patterns:
        if any(regex.match(c) for c in candidates):
            ignored = not exception
    return ignored


def test_dockerignore_matcher_follows_docker_semantics(tmp_path):
    ignore = tmp_path / ".dockerignore"
    ignore.write_text("*\n!keep/\nkeep/**/*.pyc\n!keep/special.pyc\n/abs?\n")
    patterns = dockerignore_patterns(ignore)
    assert is_ignored("anything", patterns)
    assert is_ignored("dir/file", patterns)
    assert not is_ignored("keep/a/b.py", patterns)
    assert is_ignored("keep/a/b.pyc", patterns)
    assert is_ignored("keep/b.pyc", patterns)  # ** matches no folder too
    assert not is_ignored("keep/special.pyc", patterns)


# ------------------------------------------------------------------ the Dockerfile

def test_base_images_and_tags_are_pinned(dockerfile):
    names = {s.name for s in dockerfile.stages if s.name}
    for stage in dockerfile.stages:
        if "${WEIGHTS_SRC}" in stage.base:  # the stage chosen by the build argument
            continue
        base = dockerfile.expand(stage.base)
        if base in names:
            continue
        assert ":" in base.rsplit("/", 1)[-1], f"FROM {base}: give the image an explicit tag"
        assert not base.endswith(":latest"), f"FROM {base}: pin a version, not latest"
    assert dockerfile.expand("${PYTHON_IMAGE}").startswith("python:3.11-slim")
    assert ":latest" not in DOCKERFILE.read_text()


def test_weights_source_is_chosen_by_a_build_argument(dockerfile):
    assert dockerfile.global_args.get("WEIGHTS_SRC") == "download"
    chooser = [s for s in dockerfile.stages if s.base == "weights-${WEIGHTS_SRC}"]
    assert len(chooser) == 1 and chooser[0].name == "weights", "expected `FROM weights-${WEIGHTS_SRC} AS weights`"
    for source in WEIGHTS_SOURCES:
        dockerfile.stage(f"weights-{source}")

    download = " ".join(i.args for i in dockerfile.stage("weights-download").all("RUN"))
    assert "python -m handspring_models.weights download" in download
    assert '"${MODEL}" --out "/weights/${MODEL}"' in download
    # The Hugging Face cache lives in a BuildKit cache mount: in no layer of any stage.
    mount = re.search(r"--mount=type=cache,target=(\S+?)[,\s]", download)
    assert mount and f"HF_HOME={mount.group(1)}" in download

    local = dockerfile.stage("weights-local")
    copies = local.all("COPY")
    assert [c.words() for c in copies] == [["weights/${MODEL}/", "/weights/${MODEL}/"]]
    for stage in ("weights-download", "weights-local", "weights-random"):
        runs = " ".join(i.args for i in dockerfile.stage(stage).all("RUN"))
        assert 'handspring_models.weights verify "/weights/${MODEL}"' in runs, f"{stage} does not verify its weights"


def test_the_backend_is_a_build_argument_converted_at_build_time(dockerfile):
    assert dockerfile.global_args.get("BACKEND") == "torch"
    converted = dockerfile.stage("weights-converted")
    assert converted.base == "weights"
    run = " ".join(i.args for i in converted.all("RUN"))
    assert 'handspring_models.weights compile "/weights/${MODEL}" --backend openvino' in run
    # copied, not mounted: the IR's cache key follows the code, and so must the layer cache
    assert [c.words() for c in converted.all("COPY")] == [["handspring_models/", "/src/handspring_models/"]]
    deps = " ".join(i.args for i in dockerfile.stage("deps").all("RUN"))
    assert "-r /tmp/requirements-openvino.txt" in deps
    env = " ".join(i.args for i in dockerfile.final.all("ENV"))
    assert "HANDSPRING_BACKEND=${BACKEND}" in env


def test_torch_comes_from_the_cpu_index_before_the_rest(dockerfile):
    runs = [i for s in dockerfile.stages for i in s.all("RUN") if "pip" in i.args and " install" in i.args]
    assert runs, "no pip install in the Dockerfile"
    deps = dockerfile.stage("deps")
    args = dockerfile.stage_args(deps)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"

    pinned = re.search(r"^torch==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned, "requirements.txt no longer pins torch"
    assert args["TORCH_VERSION"] == pinned.group(1), "Dockerfile TORCH_VERSION differs from requirements.txt"

    text = " ".join(i.args for i in deps.all("RUN"))
    installs = [part for part in re.split(r"&&", text) if re.search(r"\bpip\b.*\binstall\b", part)]
    torch_install = [p for p in installs if '"torch==${TORCH_VERSION}"' in p]
    rest_install = [p for p in installs if "-r /tmp/requirements.txt" in p]
    assert len(torch_install) == 1 and len(rest_install) == 1
    assert installs.index(torch_install[0]) < installs.index(rest_install[0]), "torch must be installed first"
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_install[0]
    assert "--extra-index-url" not in text, "a second index would let pip pick PyPI's CUDA torch"
    for part in installs:
        assert "--no-cache-dir" in part, f"pip install without --no-cache-dir: {part.strip()}"


def test_the_image_builds_the_panel_kernel_as_setup_py_does(dockerfile):
    setup = ast.parse((REPO / "setup.py").read_text())
    constants = {node.targets[0].id: node.value for node in setup.body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    flags = ast.literal_eval(constants["PANEL_GEMM_FLAGS"])
    sources = ast.literal_eval(constants["NATIVE_SOURCES"])
    kernels = dockerfile.stage("kernels")
    assert kernels.base == "${PYTHON_IMAGE}"  # gcc stays in this stage
    build = re.search(r"gcc (.*?) -o /out/panel_gemm\.so\s+((?:/src/\S+\.c\s*)+)", " ".join(i.args for i in kernels.all("RUN")))
    assert build, "the kernels stage no longer compiles panel_gemm.so"
    assert set(flags) <= set(build.group(1).split()), f"the Dockerfile's flags differ from setup.py's {flags}"
    assert [Path(s).name for s in build.group(2).split()] == sources
    copies = [c.words() for c in dockerfile.final.all("COPY") if c.flags().get("from") == "kernels"]
    assert copies == [["/out/", "handspring_models/runtime/native/"]]
    assert "handspring_models/runtime/native/*.so" in (REPO / ".dockerignore").read_text().splitlines()


def test_setup_py_builds_every_c_source_of_the_library():
    setup = ast.parse((REPO / "setup.py").read_text())
    sources = next(ast.literal_eval(node.value) for node in setup.body
                   if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "NATIVE_SOURCES")
    assert sorted(sources) == sorted(p.name for p in (REPO / "handspring_models/runtime/native").glob("*.c"))


def test_final_stage_is_small_and_unprivileged(dockerfile):
    final = dockerfile.final
    assert final.base == "${PYTHON_IMAGE}"
    for ins in final.all("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|apk)\b", ins.args), f"final stage installs something: {ins.args}"

    users = final.all("USER")
    assert users, "the final stage has no USER: it would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"final stage runs as {users[-1].args}"
    created = " ".join(i.args for i in final.all("RUN"))
    assert re.search(rf"useradd\b.*--uid {user}\b", created) or re.search(rf"useradd\b.*\b{user}$", created), \
        f"USER {user} is not created in the final stage"

    copies = final.all("COPY")
    from_stages = sorted(c.flags()["from"] for c in copies if "from" in c.flags())
    assert from_stages == ["deps", "kernels", "weights-converted"]
    context_sources = sorted(w for c in copies if "from" not in c.flags() for w in c.words()[:-1])
    # pyproject.toml: the version /meta reports (the image runs the code from /app, not installed)
    assert context_sources == ["app/", "handspring_models/", "pyproject.toml"], \
        "the final stage copies more than the code"


def test_copy_from_names_existing_stages(dockerfile):
    names = {s.name for s in dockerfile.stages}
    for stage in dockerfile.stages:
        for ins in stage.all("COPY"):
            source = ins.flags().get("from")
            if source is not None:
                assert source in names, f"line {ins.line}: COPY --from={source} is no stage"


def test_every_context_copy_exists_and_is_not_dockerignored(dockerfile):
    patterns = dockerignore_patterns()
    checked = 0
    for stage in dockerfile.stages:
        args = dockerfile.stage_args(stage)
        for ins in stage.all("COPY"):
            if "from" in ins.flags():
                continue
            for source in ins.words()[:-1]:
                rel = dockerfile.expand(source, args).rstrip("/")
                if stage.name == "weights-local":
                    # Made by `weights download|convert --out weights/<model>` before such a build,
                    # never committed: check only that the context would carry it.
                    assert rel == f"weights/{dockerfile.global_args['MODEL']}"
                    for name in ("config.json", "manifest.json", "merges.txt", "image.safetensors"):
                        assert not is_ignored(f"{rel}/{name}", patterns), f".dockerignore hides {rel}/{name}"
                    continue
                path = REPO / rel
                assert path.exists(), f"line {ins.line}: COPY {source}: {rel} is not in the repository"
                files = [path] if path.is_file() else [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
                assert files, f"{rel} holds no Python files"
                for file in files:
                    name = file.relative_to(REPO).as_posix()
                    assert not is_ignored(name, patterns), f".dockerignore hides {name}, which COPY {source} needs"
                checked += 1
    assert checked >= 4  # requirements.txt, handspring_models/ (twice), app/


def test_dockerignore_keeps_everything_else_out():
    patterns = dockerignore_patterns()
    for kept in ("requirements.txt", "app/main.py", "app/static/index.html", "app/static/app.js",
                 "handspring_models/weights/__init__.py",
                 "weights/clip_vit_b_32/text.safetensors"):
        assert not is_ignored(kept, patterns), kept
    for left_out in (".git/HEAD", ".venv/bin/python", ".env", "tests/conftest.py", "bench/results/run.json",
                     ".pytest_cache/v/cache/lastfailed", "weaviate-example/example.py",
                     "app/__pycache__/main.cpython-311.pyc", "handspring_models/clip.pyc",
                     "weights/clip_vit_b_32-random-demo/config.json", "weights/tmpk2j4x9/out/config.json"):
        assert is_ignored(left_out, patterns), left_out


def test_runtime_environment_and_entrypoint(dockerfile):
    final = dockerfile.final
    args = dockerfile.stage_args(final)
    env = {}
    for ins in final.all("ENV"):
        for word in shlex.split(ins.args):
            name, _, value = word.partition("=")
            env[name] = value
    weights_dir = dockerfile.expand(env["HANDSPRING_WEIGHTS_DIR"], args)
    weights_copy = [c for c in final.all("COPY") if c.flags().get("from") == "weights-converted"]
    assert [dockerfile.expand(w, args) for w in weights_copy[0].words()] == [weights_dir, weights_dir]
    assert "/opt/venv/bin" in env["PATH"].split(":")[0]

    exposed = [w.split("/")[0] for ins in final.all("EXPOSE") for w in ins.words()]
    assert exposed == ["8080"]

    cmds = final.all("CMD")
    assert cmds and cmds[-1].args.startswith("["), "CMD must use the exec form (the server as PID 1 gets SIGTERM)"
    assert cmds[-1].words() == ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8080"]
    assert not final.all("ENTRYPOINT")
    assert (REPO / "app" / "__main__.py").is_file(), "CMD runs `python -m app` but app/__main__.py is missing"


def healthcheck(dockerfile) -> tuple[dict[str, str], list[str]]:
    checks = dockerfile.final.all("HEALTHCHECK")
    assert len(checks) == 1, "the final stage needs one HEALTHCHECK"
    ins = checks[0]
    words = ins.args.split("CMD", 1)
    flags = Instruction("HEALTHCHECK", words[0].strip(), ins.line).flags()
    return flags, json.loads(words[1].strip())


def test_healthcheck_is_sensible(dockerfile):
    flags, command = healthcheck(dockerfile)
    assert command[0] == "python", "the slim image has no curl or wget: check with Python"
    assert "http://127.0.0.1:8080/.well-known/ready" in command[-1]
    interval, timeout = duration_seconds(flags["interval"]), duration_seconds(flags["timeout"])
    assert 30 <= duration_seconds(flags["start-period"]) <= 300  # import torch + load 600 MB of weights
    assert timeout < interval <= 60
    assert 1 <= int(flags["retries"]) <= 10


class _Ready(BaseHTTPRequestHandler):
    status = 204

    def do_GET(self):
        self.send_response(self.status if self.path == "/.well-known/ready" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def ready_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Ready", (_Ready,), {}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_healthcheck_command_passes_only_when_ready(dockerfile, ready_server):
    """Run the HEALTHCHECK's own command (its port pointed at a stub) with this Python."""
    _, command = healthcheck(dockerfile)
    port = ready_server.server_address[1]
    code = command[-1].replace("127.0.0.1:8080/", f"127.0.0.1:{port}/")
    argv = [sys.executable, *command[1:-1], code]

    ready_server.RequestHandlerClass.status = 204
    assert subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0
    ready_server.RequestHandlerClass.status = 503
    assert subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 1
    ready_server.server_close()  # nothing listening
    assert subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 1


# ------------------------------------------------------------------ docker-compose.yml

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: str(v) for k, v in env.items()}


def published(service: dict) -> dict[int, int]:
    """container port -> host port, from the short syntax ("8080:8080", "127.0.0.1:9090:8080")."""
    out = {}
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        out[int(parts[-1].split("/")[0])] = int(parts[-2]) if len(parts) > 1 else None
    return out


def test_weaviate_is_wired_to_the_handspring_service(compose, dockerfile):
    services = compose["services"]
    weaviate = services["weaviate"]
    image, _, tag = weaviate["image"].rpartition(":")
    assert image.endswith("semitechnologies/weaviate")
    assert re.fullmatch(r"1\.\d+\.\d+", tag), f"pin a Weaviate 1.x release, not {tag!r}"

    env = environment(weaviate)
    assert "multi2vec-clip" in [m.strip() for m in env["ENABLE_MODULES"].split(",")]
    assert env["DEFAULT_VECTORIZER_MODULE"] == "multi2vec-clip"
    for name in ("QUERY_DEFAULTS_LIMIT", "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED", "PERSISTENCE_DATA_PATH",
                 "CLUSTER_HOSTNAME"):
        assert env.get(name), f"Weaviate's {name} is not set"

    url = urlparse(env["CLIP_INFERENCE_API"])
    assert url.scheme == "http" and url.path in ("", "/")
    assert url.hostname in services, f"CLIP_INFERENCE_API names {url.hostname!r}, which is no service"
    assert url.hostname == "multi2vec-clip"  # the name Weaviate's docs use
    exposed = [w.split("/")[0] for ins in dockerfile.final.all("EXPOSE") for w in ins.words()]
    assert str(url.port) == "8080" and exposed == ["8080"], "Weaviate calls a port the image does not serve"

    ports = published(weaviate)
    assert ports.get(8080) and ports.get(50051), "publish 8080 (REST) and 50051 (gRPC, weaviate-client v4)"
    assert weaviate["volumes"] and any(v.endswith(":" + env["PERSISTENCE_DATA_PATH"]) for v in weaviate["volumes"])

    depends = weaviate.get("depends_on", {})
    assert depends.get(url.hostname, {}).get("condition") == "service_healthy"
    assert dockerfile.final.all("HEALTHCHECK"), "service_healthy would wait forever without a HEALTHCHECK"


def test_handspring_service_builds_this_repository(compose, dockerfile):
    clip = compose["services"]["multi2vec-clip"]
    build = clip["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    args = build.get("args", {})
    assert args.get("MODEL", dockerfile.global_args["MODEL"]) == dockerfile.global_args["MODEL"]
    weights_src = re.fullmatch(r"\$\{WEIGHTS_SRC:-(\w+)\}|(\w+)", str(args.get("WEIGHTS_SRC", "download")))
    assert weights_src and (weights_src.group(1) or weights_src.group(2)) in WEIGHTS_SOURCES
    assert not clip.get("image", "x:1").endswith(":latest")

    env = environment(clip)
    assert "ENABLE_CUDA" not in env, "Handspring is CPU-only: ENABLE_CUDA belongs to Weaviate's own image"
    assert all(name.startswith("HANDSPRING_") for name in env)
    assert env.get("HANDSPRING_FEATURE", "clip_vit_b_32").startswith(dockerfile.global_args["MODEL"])


def test_compose_file_has_no_latest_images():
    assert ":latest" not in COMPOSE.read_text()


# ------------------------------------------------------------------ docker-compose.bind.yml

BIND_COMPOSE = EXAMPLE_DIR / "docker-compose.bind.yml"


def test_bind_compose_wires_weaviate_to_an_imagebind_build(dockerfile):
    import handspring_models

    services = yaml.safe_load(BIND_COMPOSE.read_text())["services"]
    env = environment(services["weaviate"])
    assert "multi2vec-bind" in [m.strip() for m in env["ENABLE_MODULES"].split(",")]
    url = urlparse(env["BIND_INFERENCE_API"])  # the variable Weaviate's bind module reads
    assert url.scheme == "http" and url.hostname == "multi2vec-bind" and url.port == 8080
    assert services["weaviate"]["depends_on"]["multi2vec-bind"]["condition"] == "service_healthy"

    bind = services["multi2vec-bind"]
    assert (BIND_COMPOSE.parent / bind["build"]["context"]).resolve() == REPO
    model = bind["build"]["args"]["MODEL"]
    assert model == "imagebind_huge" and model in {m.name for m in handspring_models.list_models()}
    feature = environment(bind).get("HANDSPRING_FEATURE", model)
    assert handspring_models.FEATURES[feature][0] == model
    assert ":latest" not in BIND_COMPOSE.read_text()


def test_bind_example_compiles(tmp_path):
    import py_compile

    py_compile.compile(str(EXAMPLE_DIR / "bind_example.py"), cfile=str(tmp_path / "b.pyc"), doraise=True)


# ------------------------------------------------------------------ example.py

def test_example_compiles(tmp_path):
    import py_compile

    py_compile.compile(str(EXAMPLE), cfile=str(tmp_path / "example.pyc"), doraise=True)


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("handspring_weaviate_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_images_decode(example):
    from PIL import Image

    for caption, raw in example.drawn_shapes():
        assert caption and Image.open(io.BytesIO(raw)).size == (224, 224)
    caption, raw = example.query_image(example.drawn_shapes())
    assert "mirrored" in caption and Image.open(io.BytesIO(raw)).mode == "RGB"


class _FakeVectorizer(BaseHTTPRequestHandler):
    """Just enough of the Weaviate inference contract (see shared docs) to drive example.py --direct."""

    requests: ClassVar[list[dict]] = []

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/.well-known/ready":
            self.send_response(204)
            self.end_headers()
        else:
            self._json(200, {"model": "fake", "dim": 4})

    def do_POST(self):
        from PIL import Image

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(body)

        def vector(seed: bytes) -> list[float]:
            return [float(b) + 1 for b in hashlib.sha256(seed).digest()[:4]]

        for image in body.get("images", []):
            Image.open(io.BytesIO(base64.b64decode(image, validate=True))).load()
        self._json(200, {"textVectors": [vector(t.encode()) for t in body.get("texts", [])],
                         "imageVectors": [vector(i.encode()) for i in body.get("images", [])]})

    def log_message(self, *args):
        pass


def test_example_direct_mode_speaks_the_contract(example, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for caption, raw in example.drawn_shapes():
        (folder / (caption.replace(" ", "_") + ".png")).write_bytes(raw)
    handler = type("Fake", (_FakeVectorizer,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert example.main(["--direct", url, "--images", str(folder)]) == 0
    finally:
        server.shutdown()
        server.server_close()

    images = example.images_from_folder(folder)
    assert [c for c, _ in images] == sorted(c for c, _ in example.drawn_shapes())
    imports, queries = handler.requests[:len(images)], handler.requests[len(images):]
    for (caption, _), body in zip(images, imports):  # one object per request, text and image together
        assert body["texts"] == [caption] and len(body["images"]) == 1
    assert queries[0] == {"texts": example.TEXT_QUERIES}  # no empty "images": Weaviate omits it too
    assert set(queries[1]) == {"images"} and len(queries[1]["images"]) == 1
    assert len(queries) == 2
    out = capsys.readouterr().out
    assert out.count("near_text") == len(example.TEXT_QUERIES) and "near_image" in out


def test_example_collection_schema_for_multi2vec_clip(example):
    """The collection example.py creates, as the JSON weaviate-client sends to Weaviate."""
    pytest.importorskip("weaviate")
    from weaviate.collections.classes.config import _CollectionConfigCreate

    config = _CollectionConfigCreate(**example.collection_config("Photos"))._to_dict()
    assert config["class"] == "Photos"
    assert {p["name"]: p["dataType"] for p in config["properties"]} == {"caption": ["text"], "image": ["blob"]}
    vectorizers = [v["vectorizer"] for v in config.get("vectorConfig", {}).values()]
    if not vectorizers:  # older clients: the single legacy vectorizer
        vectorizers = [config["moduleConfig"]]
    assert vectorizers[0]["multi2vec-clip"] == {"imageFields": ["image"], "textFields": ["caption"]}
