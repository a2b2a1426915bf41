"""Build Handspring's container image with whichever engine this machine has: Docker (with a
running daemon) or podman.

    python scripts/image.py setup    # root on Debian: podman and what it needs, the base image, the torch index
    python scripts/image.py build --tag handspring:clip_vit_b_32 [--model M] [--weights-src S] [--weights DIR]
    python scripts/image.py engine   # print the engine's command line

Where the base image cannot be pulled (no registry), podman builds on a base made here: Debian
bookworm's Python 3.11 (the Python of python:3.11-slim) by debootstrap, imported as
localhost/bookworm-python:3.11, with the host's CA bundle (downloads go through a proxy with its own
CA). torch then comes from a local simple index of `pip download torch==...` (the CPU wheel this
machine has on disk), served on 127.0.0.1 to a build on the host's network. Both are cached in
$HANDSPRING_IMAGE_CACHE (default /var/cache/handspring-image as root, else ~/.cache/handspring-image)
and in podman's storage, so only the first run on a machine makes them. Every step is idempotent.

stdlib only: it runs with any Python 3.11, before the project's venv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL_BASE = "localhost/bookworm-python:3.11"
DEFAULT_BASE = "python:3.11-slim"  # the Dockerfile's PYTHON_IMAGE default
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
APT_PACKAGES = ("podman", "runc", "debootstrap")
INDEX_PORT = int(os.environ.get("HANDSPRING_TORCH_INDEX_PORT", "47813"))
# What the build context holds (the Dockerfile's COPY sources; .dockerignore keeps the rest out).
CONTEXT_FILES = ("requirements.txt", "requirements-openvino.txt", "pyproject.toml", "handspring_models", "app", "scripts/compile_bytecode.py", ".dockerignore")


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    default = Path("/var/cache/handspring-image") if os.geteuid() == 0 else Path.home() / ".cache/handspring-image"
    path = Path(os.environ.get("HANDSPRING_IMAGE_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def torch_pin() -> str:
    match = re.search(r"^torch==([\w.]+)", (REPO / "requirements.txt").read_text(), re.M)
    assert match, "requirements.txt pins no torch"
    return match.group(1)


# ------------------------------------------------------------------ the engine

@dataclass(frozen=True)
class Engine:
    name: str  # docker | podman
    argv: tuple[str, ...]  # the command and its global flags

    def cmd(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def run(self, *args: str, check: bool = True, capture: bool = True, timeout: float | None = 600,
            **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), check=check, text=True, timeout=timeout,
                              capture_output=capture, **kw)

    def has_image(self, ref: str) -> bool:
        return self.image_id(ref) is not None

    def image_id(self, ref: str) -> str | None:
        found = self.run("image", "inspect", "--format", "{{.Id}}", ref, check=False, timeout=60)
        return (found.stdout.strip() or None) if found.returncode == 0 else None


def podman_argv() -> tuple[str, ...]:
    argv = ["podman"]
    # crun refuses hybrid cgroups (v1 controllers with a v2 mount beside them); runc runs there.
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists() and shutil.which("runc"):
        argv += ["--runtime", "runc"]
    if not Path("/run/systemd/system").is_dir():  # no systemd to ask for cgroups
        argv.append("--cgroup-manager=cgroupfs")
    return tuple(argv)


@functools.cache
def find_engine() -> Engine | None:
    """Docker if its daemon answers, else podman if installed, else None."""
    if shutil.which("docker"):
        with contextlib.suppress(subprocess.TimeoutExpired):
            if subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0:
                return Engine("docker", ("docker",))
    if shutil.which("podman"):
        return Engine("podman", podman_argv())
    return None


def install_podman() -> None:
    """Debian's podman, runc and debootstrap (root only), as the offline recipe needs them."""
    missing = [p for p in APT_PACKAGES if not shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(f"install {' '.join(missing)} (needs root and apt-get)")
    log(f"apt-get install {' '.join(APT_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], check=True, env=env, stdout=subprocess.DEVNULL)
    find_engine.cache_clear()


def podman_settings() -> list[tuple[str, str, str]]:
    """(section, key, value) for containers.conf: what this machine needs, for every podman client
    (podman-compose and `podman kube play` too, which take no global flags from us)."""
    # podman as root sets the open-files limit to 1048576; where the hard limit is lower (20000 here)
    # raising it is refused and no container starts: let containers inherit the limits.
    settings = [("containers", "default_ulimits", "[]")]
    argv = podman_argv()
    if "runc" in argv:
        settings.append(("engine", "runtime", '"runc"'))
    if "--cgroup-manager=cgroupfs" in argv:
        settings.append(("engine", "cgroup_manager", '"cgroupfs"'))
    return settings


def configure_podman() -> None:
    """Add the settings above to /etc/containers/containers.conf, leaving any key already set."""
    if os.geteuid() != 0:
        return
    text = CONTAINERS_CONF.read_text() if CONTAINERS_CONF.exists() else ""
    changed = []
    for section, key, value in podman_settings():
        if re.search(rf"^\s*{key}\s*=", text, re.M):
            continue
        line = f"{key} = {value}\n"
        header = re.search(rf"^\[{section}\]\s*$\n?", text, re.M)
        if header:
            text = text[:header.end()] + line + text[header.end():]
        else:
            text += ("\n" if text and not text.endswith("\n") else "") + f"[{section}]\n{line}"
        changed.append(line.strip())
    if changed:
        CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
        CONTAINERS_CONF.write_text(text)
        log(f"{CONTAINERS_CONF}: {'; '.join(changed)}")


# ------------------------------------------------------------------ the base image

def pullable(engine: Engine, ref: str) -> bool:
    if engine.has_image(ref):
        return True
    try:
        return engine.run("pull", "--quiet", ref, check=False, timeout=600).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def local_base(engine: Engine, install: bool = True) -> str:
    """localhost/bookworm-python:3.11: debootstrap's minimal bookworm with Python 3.11, venv and pip."""
    if engine.has_image(LOCAL_BASE):
        return LOCAL_BASE
    tarball = cache_dir() / "bookworm-python-3.11.tar"
    if not tarball.exists():
        if install:
            install_podman()  # debootstrap, if missing
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            rootfs = Path(tmp) / "rootfs"
            log("debootstrap bookworm (a minute or two, once per machine)")
            started = time.monotonic()
            subprocess.run([debootstrap, "--variant=minbase",
                            "--include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates",
                            "bookworm", str(rootfs)], check=True, stdout=subprocess.DEVNULL)
            # The host's bundle: package downloads inside the build go through the host's proxy.
            shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (rootfs / junk).glob("*"):
                    if item.is_file():
                        item.unlink()
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
            log(f"debootstrap took {time.monotonic() - started:.0f} s; cached {tarball}")
    engine.run("import", "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
               "--change", "CMD [\"python3\"]", str(tarball), LOCAL_BASE)
    log(f"imported {LOCAL_BASE}")
    return LOCAL_BASE


def base_image(engine: Engine, offline: str, install: bool = True) -> str | None:
    """The PYTHON_IMAGE build argument: None (the Dockerfile's default) when it can be pulled."""
    # (fully qualified: podman resolves no short name to a registry unless configured to)
    if offline == "no" or (offline == "auto" and pullable(engine, f"docker.io/library/{DEFAULT_BASE}")):
        return None
    if engine.name != "podman":
        raise SystemExit(f"{DEFAULT_BASE} cannot be pulled; the offline recipe needs podman")
    return local_base(engine, install)


# ------------------------------------------------------------------ the torch index

def normalized(project: str) -> str:
    return re.sub(r"[-_.]+", "-", project).lower()


def torch_index() -> Path:
    """A PEP 503 simple index (one folder per project) of torch's CPU wheel and its dependencies,
    as pip downloads them on this machine."""
    index = cache_dir() / f"torch-{torch_pin()}-index"
    if (index / ".complete").exists():
        return index
    wheels = cache_dir() / "wheels"
    log(f"pip download torch=={torch_pin()}")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                    f"torch=={torch_pin()}", "-d", str(wheels)], check=True)
    torch_wheels = list(wheels.glob(f"torch-{torch_pin()}*.whl"))
    # PyPI's Linux torch pulls multi-GB CUDA libraries: only a CPU build belongs in this index.
    if not torch_wheels or any("+cpu" not in w.name for w in torch_wheels) or list(wheels.glob("nvidia_*")):
        raise SystemExit(f"pip did not take a CPU torch wheel ({[w.name for w in torch_wheels]}); "
                         "pass --torch-index URL instead")
    shutil.rmtree(index, ignore_errors=True)
    for wheel in wheels.glob("*.whl"):
        folder = index / normalized(wheel.name.split("-")[0])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wheel, folder / wheel.name)
    for folder in index.iterdir():
        links = "".join(f'<a href="{w.name}">{w.name}</a>\n' for w in sorted(folder.glob("*.whl")))
        (folder / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    (index / ".complete").touch()
    return index


@contextlib.contextmanager
def serve(folder: Path):
    """`folder` over HTTP on 127.0.0.1 for as long as the block runs. On a fixed port when it is
    free: the URL is a build argument, and a new one would void the build cache of every step after it."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", INDEX_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


# ------------------------------------------------------------------ building

def setup(offline: str = "auto", install: bool = True) -> tuple[Engine, str | None]:
    """Everything a build needs, made once: (engine, PYTHON_IMAGE override or None). ``install``:
    apt-get what is missing (podman and runc when there is no engine, debootstrap for the base)."""
    engine = find_engine()
    if engine is None and install:
        install_podman()
        engine = find_engine()
    if engine is None:
        raise SystemExit("no container engine: install Docker or podman")
    if engine.name == "podman":
        configure_podman()
    base = base_image(engine, offline, install)
    if base is not None:
        torch_index()
    return engine, base


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def build_context(model: str, weights: Path | None):
    """The repository, or, with `weights`, a staged copy of what the image needs with that folder
    as weights/<model>/ (a test's weights never go into the repository's own weights/)."""
    if weights is None:
        yield REPO
        return
    with tempfile.TemporaryDirectory(prefix="handspring-context-") as tmp:
        for name in CONTEXT_FILES:
            src, dst = REPO / name, Path(tmp) / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"), copy_function=link_or_copy)
            else:
                link_or_copy(str(src), str(dst))
        shutil.copytree(weights, Path(tmp) / "weights" / model, copy_function=link_or_copy)
        yield Path(tmp)


def build(tag: str, model: str = "clip_vit_b_32", weights_src: str = "download", weights: Path | None = None,
          offline: str = "auto", build_args: dict[str, str] | None = None, install: bool = True) -> Engine:
    engine, base = setup(offline, install)
    args = {"MODEL": model, "WEIGHTS_SRC": "local" if weights else weights_src, **(build_args or {})}
    flags = ["--format", "docker"] if engine.name == "podman" else []  # OCI format drops HEALTHCHECK
    with contextlib.ExitStack() as stack:
        if base is not None:
            args["PYTHON_IMAGE"] = base
            url = stack.enter_context(serve(torch_index()))
            args.setdefault("TORCH_INDEX_URL", url)
            flags.append("--network=host")  # so the build reaches the index on 127.0.0.1
        context = stack.enter_context(build_context(model, weights))
        argv = engine.cmd("build", *flags, "-t", tag, "-f", str(REPO / "Dockerfile"),
                          *[f"--build-arg={k}={v}" for k, v in args.items()], str(context))
        log(" ".join(argv))
        replaced = engine.image_id(tag)
        started = time.monotonic()
        subprocess.run(argv, check=True)
        log(f"built {tag} in {time.monotonic() - started:.0f} s")
    if replaced and replaced != engine.image_id(tag):
        # The image the tag named before is left untagged, with its layers: repeated builds would fill
        # the disk (the test suite builds on every run). A container still using it keeps it.
        if engine.run("rmi", replaced, check=False, timeout=120).returncode == 0:
            log(f"removed the image {tag} named before ({replaced[:12]})")
    return engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/image.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline", choices=("auto", "yes", "no"), default="auto",
                        help="use the local base and torch index: auto = when the base cannot be pulled")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="install podman if no engine, make the base image and the torch index")
    sub.add_parser("engine", help="print the engine command line")
    p = sub.add_parser("build", help="build the image")
    p.add_argument("--tag", default=None, help="default: handspring:<model>")
    p.add_argument("--model", default="clip_vit_b_32")
    p.add_argument("--weights-src", default="download", choices=("download", "local", "random"))
    p.add_argument("--weights", type=Path, help="bake in this weights folder (implies WEIGHTS_SRC=local)")
    p.add_argument("--backend", default="torch", choices=("torch", "openvino"),
                   help="openvino: install OpenVINO and convert the towers at build time (CLIP families)")
    p.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)

    if args.command == "engine":
        engine = find_engine()
        if engine is None:
            print("no container engine", file=sys.stderr)
            return 1
        print(" ".join(engine.argv))
    elif args.command == "setup":
        engine, base = setup(args.offline)
        log(f"engine: {' '.join(engine.argv)}; base: {base or DEFAULT_BASE}")
    else:
        extra = {"BACKEND": args.backend, **dict(a.split("=", 1) for a in args.build_arg)}
        build(args.tag or f"handspring:{args.model}", args.model, args.weights_src, args.weights, args.offline, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
