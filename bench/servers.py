"""Run one server process at a time: start it, time it to ready, sample its memory, stop it.

Time to ready: from ``Popen`` to the first 204 on ``/.well-known/ready`` (polled every 20 ms,
each poll with Weaviate's own 500 ms timeout). Memory: resident set of the server's process tree,
sampled every 20 ms by a thread for the server's whole life, and the kernel's own high-water
mark (``VmHWM``) of every process in the tree, read just before it is stopped; the peak is the
larger of the two.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
POLL_S = 0.02


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerSpec:
    name: str  # "reference", "handspring", "handspring_fp32"...
    label: str  # for the table
    argv: list[str]  # with {port} placeholders
    env: dict[str, str] = field(default_factory=dict)


def reference_spec(hf_dir: Path) -> ServerSpec:
    return ServerSpec("reference", "reference (transformers, Weaviate-style)",
                      [sys.executable, "-m", "bench.reference_server", "--weights", str(hf_dir),
                       "--host", "127.0.0.1", "--port", "{port}"])


def handspring_spec(weights_dir: Path, precision: str | None = None, backend: str | None = None) -> ServerSpec:
    env = {"HANDSPRING_WEIGHTS_DIR": str(weights_dir)}
    name, label = "handspring", "handspring (default settings)"
    if precision is not None:
        env["HANDSPRING_PRECISION"] = precision
        name, label = f"handspring_{precision}", f"handspring HANDSPRING_PRECISION={precision}"
    if backend is not None:
        env["HANDSPRING_BACKEND"] = backend
        name, label = f"{name}_{backend}", f"{label} HANDSPRING_BACKEND={backend}"
    # As the Docker image and `make run` start it.
    return ServerSpec(name, label, [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", "{port}"], env)


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _vm_hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class ServerFailed(RuntimeError):
    pass


class RunningServer:
    """A started server: ``url``, ``ready_s``, and memory figures once stopped."""

    def __init__(self, spec: ServerSpec, log_dir: Path, ready_timeout: float = 300.0):
        self.spec = spec
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{spec.name}.log"
        self.peak_tree_rss = 0
        self.rss_at_ready = 0
        self.hwm = 0
        self._stop_sampling = threading.Event()
        # "default settings" means no HANDSPRING_* knob but the weights, whatever the caller's shell has
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSPRING_")}
        env.update(spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        argv = [a.replace("{port}", str(self.port)) for a in spec.argv]
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        t0 = time.perf_counter()
        self.popen = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        self.proc = psutil.Process(self.popen.pid)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        try:
            self.ready_s = self._wait_ready(t0, ready_timeout)
        except BaseException:
            self.stop()
            raise
        self.rss_at_ready = self._tree_rss()
        self.meta = None
        try:
            r = httpx.get(f"{self.url}/meta", timeout=5.0)
            self.meta = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            pass

    def _tree_rss(self) -> int:
        total = 0
        for p in _tree(self.proc):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop_sampling.is_set():
            self.peak_tree_rss = max(self.peak_tree_rss, self._tree_rss())
            self._stop_sampling.wait(POLL_S)

    def _wait_ready(self, t0: float, timeout: float) -> float:
        with httpx.Client(timeout=0.5) as client:
            while True:
                if self.popen.poll() is not None:
                    raise ServerFailed(f"{self.spec.name} exited with {self.popen.returncode} before ready:\n"
                                       + self.log_tail())
                try:
                    if client.get(f"{self.url}/.well-known/ready").status_code == 204:
                        return time.perf_counter() - t0
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - t0 > timeout:
                    raise ServerFailed(f"{self.spec.name} not ready after {timeout:.0f} s:\n" + self.log_tail())
                time.sleep(POLL_S)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def peak_rss(self) -> int:
        return max(self.peak_tree_rss, self.hwm)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.peak_tree_rss = max(self.peak_tree_rss, self._tree_rss())
            self.hwm = sum(_vm_hwm_bytes(p.pid) for p in _tree(self.proc))
        self._stop_sampling.set()
        self._sampler.join(timeout=2)
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)  # our own session: the server and its children
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=15)
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
