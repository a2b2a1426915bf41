"""Seconds from `run` to the first 204 from /.well-known/ready, for a built image, with its bytecode
and without it (a derived image with the __pycache__ folders of /opt/venv and /app removed).

    python scripts/startup_time.py IMAGE [--runs 5] [--without-bytecode] [--imports]

Each run starts a fresh container (published on 127.0.0.1 only), polls every 50 ms for at most
180 s, and removes it. Prints every run and the median. ``--imports`` instead times, in a fresh
container each run, the imports the server does before it serves (torch, the web stack, app/), as
CPU seconds of that process: what bytecode saves is compiling, CPU work, and CPU time moves less
than wall time when other work shares the machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.image import Engine, find_engine  # noqa: E402

STRIP_BYTECODE = """FROM {image}
USER 0
RUN find /opt/venv /app -depth -name __pycache__ -type d -exec rm -rf {{}} +
USER 10001:10001
"""


def without_bytecode(engine: Engine, image: str) -> str:
    tag = image.rsplit(":", 1)[0] + ":no-bytecode"
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Containerfile").write_text(STRIP_BYTECODE.format(image=image))
        flags = ["--format", "docker"] if engine.name == "podman" else []
        engine.run("build", *flags, "-t", tag, "-f", str(Path(context) / "Containerfile"), context)
    return tag


IMPORTS = ("import time; t = time.process_time(); "
           "import torch, uvicorn, fastapi, handspring_models, app.main, app.__main__; "
           "print(time.process_time() - t)")


def import_cpu_seconds(engine: Engine, image: str) -> float:
    return float(engine.run("run", "--rm", image, "python", "-c", IMPORTS).stdout.split()[-1])


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 204
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def time_to_ready(engine: Engine, image: str, timeout: float = 180) -> float:
    name = f"handspring-startup-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    engine.run("run", "--detach", "--name", name, "--publish", "127.0.0.1::8080", image)
    try:
        port = engine.run("port", name, "8080/tcp").stdout.split()[0].rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}/.well-known/ready"
        while not ready(url):
            if time.monotonic() - started > timeout:
                raise SystemExit(f"{image}: not ready within {timeout:.0f} s")
            time.sleep(0.05)
        return time.monotonic() - started
    finally:
        engine.run("rm", "--force", name, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--without-bytecode", action="store_true")
    parser.add_argument("--imports", action="store_true", help="CPU seconds of the imports, not time to ready")
    args = parser.parse_args(argv)
    engine = find_engine()
    if engine is None:
        raise SystemExit("no container engine")
    image = without_bytecode(engine, args.image) if args.without_bytecode else args.image
    measure, what = (import_cpu_seconds, "imports took (CPU s)") if args.imports else (time_to_ready, "ready after")
    times = []
    for _ in range(args.runs):
        times.append(measure(engine, image))
        print(f"{image}: {what} {times[-1]:.2f} s", flush=True)
    print(f"{image}: {what}: median {statistics.median(times):.2f} s over {len(times)} runs")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as e:
        sys.exit(f"{' '.join(e.cmd)}: {e.stderr}")
