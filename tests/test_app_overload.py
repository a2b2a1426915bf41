"""Overload and shutdown against a real server process (``python -m app``) on a loopback port:
clients that give up, the cap on requests in flight, the deadline, SIGTERM under load, and
memory under a burst of videos. Liveness is polled with Weaviate's 500 ms timeout throughout.

Nothing here times the server's speed: where a test needs the server to have much to do, it
sends minutes of decoding and checks what the server did with it (its CPU time, its answers)."""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from PIL import Image

from tests import media
from tests.test_app_server import LAUNCHERS, free_port, request, start, stop

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def heavy_png() -> bytes:
    """An 8000x6000 PNG of one colour: 150 KB to send, about two seconds of a core to decode and
    resize. Much work for few bytes, so the clients' own sending does not load the machine."""
    buf = io.BytesIO()
    Image.new("RGB", (8000, 6000), (90, 140, 200)).save(buf, "PNG")
    return buf.getvalue()


def body_of(images: int, picture: bytes) -> bytes:
    return json.dumps({"images": [base64.b64encode(picture).decode()] * images}).encode()


POLLER = """
import http.client, json, sys, time
port, failures, polls = int(sys.argv[1]), [], 0
while not sys.stdin.closed and time.monotonic() < float(sys.argv[2]):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        conn.request("GET", "/.well-known/live")
        status = conn.getresponse().status
        conn.close()
        if status != 204:
            failures.append(status)
    except OSError as e:
        failures.append(repr(e))
    polls += 1
    if select.select([sys.stdin], [], [], 0.05)[0]:
        break
print(json.dumps({"failures": failures, "polls": polls}))
""".replace("import http.client", "import select, http.client")


class Liveness:
    """Polls /.well-known/live the way Weaviate and a kubelet do (500 ms timeout), from a process
    of its own, until stopped; keeps what failed."""

    def __init__(self, port: int, limit: float = 280.0):
        self.proc = subprocess.Popen([sys.executable, "-c", POLLER, str(port), str(time.monotonic() + limit)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.failures: list = []
        self.polls = 0

    def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        out, _ = self.proc.communicate("stop\n", timeout=10)
        result = json.loads(out)
        self.failures, self.polls = result["failures"], result["polls"]


@contextmanager
def server(weights: Path, tmp_path: Path, launcher: list[str] = LAUNCHERS["python -m app"], **env):
    """A ready ``python -m app`` (or ``launcher``) on a free port, with a liveness poller; yields
    (process, port, poller)."""
    port, log = free_port(), tmp_path / "server.log"
    values = {"HANDSPRING_WEIGHTS_DIR": str(weights), "HANDSPRING_PRECISION": "fp32"}
    values.update({f"HANDSPRING_{k.upper()}": str(v) for k, v in env.items()})
    proc = start(values, log, port, launcher)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if request(port, "GET", "/.well-known/ready")[0] == 204:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        poller = Liveness(port)
        try:
            yield proc, port, poller
        finally:
            poller.stop()
    finally:
        if proc.poll() is None:
            stop(proc)
        proc.log_text = log.read_text()


def cpu_seconds(proc) -> float:
    times = psutil.Process(proc.pid).cpu_times()
    return times.user + times.system


def wait_until_idle(proc, within: float = 15.0, window: float = 1.0, busy: float = 0.2) -> float:
    """Seconds until the process used less than ``busy`` CPU seconds over a ``window``; fails
    past ``within``."""
    started = time.monotonic()
    last = cpu_seconds(proc)
    while time.monotonic() - started < within:
        time.sleep(window)
        now = cpu_seconds(proc)
        if now - last < busy:
            return time.monotonic() - started
        last = now
    raise AssertionError(f"the server was still busy {within:g}s after its clients left")


def metric(port: int, name: str) -> float:
    text = request(port, "GET", "/metrics", timeout=5)[1].decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def give_up_after(port: int, body: bytes, seconds: float) -> str:
    """Send a request, then leave without the answer (what a client with a timeout does)."""
    try:
        status, _ = request(port, "POST", "/vectorize", body, timeout=seconds)
        return f"answered {status}"
    except (TimeoutError, socket.timeout):
        return "gave up"


# ---------------------------------------------------------------- clients that give up

def test_work_for_clients_that_gave_up_is_dropped_and_the_server_goes_idle(tiny_weights, tmp_path, heavy_png):
    body = body_of(2, heavy_png)  # 32 clients x 2 images: minutes of decoding on 2 cores
    with server(tiny_weights, tmp_path) as (proc, port, poller):
        before = cpu_seconds(proc)
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            outcomes = list(pool.map(lambda _: give_up_after(port, body, 3.0), range(32)))
        assert outcomes.count("gave up") >= 28, outcomes  # the load really outlasted the clients
        idle_after = wait_until_idle(proc)
        spent = cpu_seconds(proc) - before
        assert metric(port, "handspring_abandoned_requests_total") >= outcomes.count("gave up")
        deadline = time.monotonic() + 30  # a decode still under way gives its share back when it ends
        while metric(port, "handspring_prepared_bytes") != 0:
            assert time.monotonic() < deadline, "the memory budget was not given back"
            time.sleep(0.05)
        assert metric(port, "handspring_queue_depth") == 0
        status, _ = request(port, "POST", "/vectorize", body_of(1, heavy_png), timeout=30)
        assert status == 200  # and it still serves
    assert poller.failures == [] and poller.polls > 0
    # 64 images were sent; a server that embedded them all would have spent minutes of CPU.
    print(f"idle {idle_after:.1f}s after the clients left; {spent:.1f} CPU seconds in all")


# ---------------------------------------------------------------- the cap on requests in flight

def test_past_the_cap_requests_get_429_with_retry_after_at_once(tiny_weights, tmp_path):
    with server(tiny_weights, tmp_path, max_concurrent_requests=2) as (proc, port, poller):
        held = []
        for _ in range(2):  # two requests whose bodies never finish: both in flight
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /vectorize HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"texts\": [")
            held.append(sock)
        deadline = time.monotonic() + 10
        while metric(port, "handspring_requests_in_flight") < 2:
            assert time.monotonic() < deadline, "the held requests never got in"
            time.sleep(0.02)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/vectorize", body=b'{"texts": ["one too many"]}')
        refused = conn.getresponse()
        body = refused.read()
        conn.close()
        for sock in held:
            sock.close()
        assert refused.status == 429 and refused.getheader("Retry-After") == "1"
        assert refused.getheader("Content-Type") == "application/json"
        assert "HANDSPRING_MAX_CONCURRENT_REQUESTS" in json.loads(body)["error"]
        assert metric(port, 'handspring_rejected_requests_total{reason="concurrency"}') == 1
        deadline = time.monotonic() + 10
        while metric(port, "handspring_requests_in_flight") > 0:  # the held ones left with their clients
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert request(port, "POST", "/vectorize", b'{"texts": ["room again"]}', timeout=30)[0] == 200
    assert poller.failures == []


# ---------------------------------------------------------------- the deadline

def test_late_work_is_answered_503_at_the_deadline_and_then_dropped(tiny_weights, tmp_path, heavy_png):
    with server(tiny_weights, tmp_path, request_timeout_s=2) as (proc, port, poller):
        before = cpu_seconds(proc)
        started = time.monotonic()
        status, body = request(port, "POST", "/vectorize", body_of(16, heavy_png), timeout=60)
        answered = time.monotonic() - started
        assert status == 503, body
        assert "HANDSPRING_REQUEST_TIMEOUT_S" in json.loads(body)["error"]
        wait_until_idle(proc)
        assert metric(port, "handspring_timed_out_requests_total") == 1
        spent = cpu_seconds(proc) - before
    assert poller.failures == []
    print(f"answered 503 after {answered:.1f}s; {spent:.1f} CPU seconds in all for 16 images")


# ---------------------------------------------------------------- SIGTERM under load

def test_sigterm_under_load_drains_answers_everyone_and_exits_0(tiny_weights, tmp_path, heavy_png):
    body = body_of(4, heavy_png)
    with server(tiny_weights, tmp_path, drain_timeout_s=3) as (proc, port, poller):
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = [pool.submit(request, port, "POST", "/vectorize", body, 60) for _ in range(4)]
            deadline = time.monotonic() + 20
            while metric(port, "handspring_requests_in_flight") < 4:
                assert time.monotonic() < deadline, "the load never got in"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            deadline = signalled + 2
            while request(port, "GET", "/.well-known/ready")[0] != 503:  # the drain says so, the port still open
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert request(port, "GET", "/.well-known/live")[0] == 204
            code = proc.wait(30)
            exited = time.monotonic() - signalled
            results = [a.result() for a in answers]
        poller.stop()
    assert code == 0, proc.log_text
    assert exited < 3 + 5, exited  # the drain deadline, and a little to close
    for status, body in results:  # every client got an answer: done, or a JSON 503
        assert status in (200, 503) and (status == 200 or "drain deadline" in json.loads(body)["error"])
    assert any(status == 503 for status, _ in results)  # there was more than the drain could finish


# ---------------------------------------------------------------- memory under a burst of videos

def peak_rss(proc) -> int:
    """The process's resident high-water mark (VmHWM), in bytes."""
    status = Path(f"/proc/{proc.pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024


@pytest.mark.parametrize("budget_mb, bounded", [(100, True), (2000, False)], ids=["budget", "no-budget"])
def test_a_burst_of_videos_waits_for_room_instead_of_filling_memory(imagebind_tiny_weights, tmp_path, budget_mb,
                                                                     bounded):
    """The model is held (tests/gated_server.py; decoding does not take turns with it, or the
    held pass would hold the decoding too) while 8 clients send 8 videos each: without a
    budget all 64 are decoded and wait in memory (18 MB of float32 each, 1.2 GB); with one, what
    waits is at most the budget. The unbounded case shows that the test can tell them apart."""
    video = base64.b64encode(media.video(2.5)).decode()
    body = json.dumps({"video": [video] * 8}).encode()
    with server(imagebind_tiny_weights, tmp_path, launcher=["-m", "tests.gated_server"], feature="imagebind_huge",
                max_prepared_mb=budget_mb, max_videos_per_request=8, take_turns="false", drain_timeout_s=2
                ) as (proc, port, poller):
        ready_peak = peak_rss(proc)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = [pool.submit(request, port, "POST", "/vectorize", body, 120) for _ in range(8)]
            deadline = time.monotonic() + 60
            while not (metric(port, "handspring_preparing") == 0
                       and metric(port, "handspring_queue_depth") + metric(port, "handspring_prepared_budget_waiting") == 64):
                assert time.monotonic() < deadline, request(port, "GET", "/metrics")[1].decode()
                time.sleep(0.05)
            held_growth = peak_rss(proc) - ready_peak
            prepared = metric(port, "handspring_prepared_bytes")
            proc.send_signal(signal.SIGUSR1)  # let the model go
            results = [a.result() for a in answers]
        final_growth = peak_rss(proc) - ready_peak
    assert [status for status, _ in results] == [200] * 8
    video_bytes = 15 * 3 * 2 * 224 * 224 * 4
    if bounded:
        assert prepared <= budget_mb * 1_000_000
        # The budget, plus what it does not hold: the decodes under way (each several times a
        # prepared video), bodies, the passes' activations and what the allocator keeps.
        assert final_growth < budget_mb * 1_000_000 + 300_000_000, (held_growth, final_growth)
    else:
        assert prepared == 64 * video_bytes and held_growth > 64 * video_bytes * 0.9, held_growth
    assert poller.failures == []
    print(f"budget {budget_mb} MB: peak RSS grew {held_growth / 1e6:.0f} MB while held, {final_growth / 1e6:.0f} MB in all")
