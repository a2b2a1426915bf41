"""Running containers of the built image, for tests/test_image.py: start one, wait for it, read
its state, stop it. Every wait polls with a deadline."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

from scripts.image import Engine


def wait_for(condition, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``condition()`` until it returns something truthy; that value, or AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def http_status(url: str, timeout: float = 5.0) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def post_json(url: str, body: dict, timeout: float = 120.0) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def get_json(url: str, timeout: float = 30.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Container:
    engine: Engine
    image: str
    env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"handspring-test-{uuid.uuid4().hex[:8]}")
    url: str = ""
    started_at: float = 0.0  # time.monotonic() when `run` returned
    ready_after: float | None = None  # seconds from `run` to ready, once waited for

    def start(self) -> Container:
        env = [f"--env={k}={v}" for k, v in self.env.items()]
        # Published on loopback only, on a port the engine picks.
        self.engine.run("run", "--detach", "--name", self.name, "--publish", "127.0.0.1::8080", *env, self.image)
        self.started_at = time.monotonic()
        port = self.engine.run("port", self.name, "8080/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def wait_ready(self, timeout: float) -> float:
        """Seconds from `run` to the first 204 from /.well-known/ready."""
        def ready():
            if not self.running():
                raise AssertionError(f"the container exited before it was ready:\n{self.logs()}")
            return http_status(self.url + "/.well-known/ready") == 204
        wait_for(ready, timeout, what=f"{self.name} ready")
        return time.monotonic() - self.started_at

    def inspect(self) -> dict:
        return json.loads(self.engine.run("container", "inspect", self.name).stdout)[0]

    def running(self) -> bool:
        return self.inspect()["State"]["Running"]

    def exec(self, *argv: str, check: bool = True):
        return self.engine.run("exec", self.name, *argv, check=check)

    def logs(self) -> str:
        result = self.engine.run("logs", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self, timeout: int) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds if it is still running."""
        self.engine.run("stop", "--time", str(timeout), self.name, timeout=timeout + 60)

    def remove(self) -> None:
        self.engine.run("rm", "--force", self.name, check=False)
