"""Connection recycling (app/connection_recycling.py): a real server on loopback, a real
keep-alive HTTP client (httpx's pool); connections are closed after N requests (Connection:
close), the client opens new ones, and no request fails. The age limit, with a fake clock."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.connection_recycling import ConnectionRecycling
from tests.test_app_server import free_port, start, stop

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def server(tiny_weights, tmp_path):
    """``python -m app`` closing each connection after 5 requests; yields its base URL."""
    port, log = free_port(), tmp_path / "server.log"
    proc = start({"HANDSPRING_WEIGHTS_DIR": str(tiny_weights), "HANDSPRING_PRECISION": "fp32",
                  "HANDSPRING_THREADS": "1", "HANDSPRING_PREPROCESS_WORKERS": "1",
                  "HANDSPRING_MAX_REQUESTS_PER_CONNECTION": "5"}, log, port, ["-m", "app"])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # Weaviate's start-up polling: until ready answers 204
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"{url}/.well-known/ready", timeout=0.5).status_code == 204:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        stop(proc)


def vectorize(client: httpx.Client, url: str, text: str) -> tuple[int, tuple, str | None]:
    """(status, the client's local address, the Connection header) of one request."""
    with client.stream("POST", f"{url}/vectorize", content=json.dumps({"texts": [text]})) as r:
        local = r.extensions["network_stream"].get_extra_info("client_addr")  # before the close
        assert len(json.loads(r.read())["textVectors"]) == 1
    return r.status_code, tuple(local), r.headers.get("connection")


def test_connections_are_recycled_after_n_requests(server):
    with httpx.Client(timeout=30) as client:
        results = [vectorize(client, server, f"text {i}") for i in range(23)]
    assert all(status == 200 for status, _, _ in results)
    per_connection: dict = {}
    for _, local, _ in results:
        per_connection[local] = per_connection.get(local, 0) + 1
    assert sorted(per_connection.values()) == [3, 5, 5, 5, 5]
    assert [header for _, _, header in results].count("close") == 4


def test_no_request_fails_under_concurrent_keep_alive_clients(server):
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=4)) as client:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: vectorize(client, server, f"text {i}"), range(80)))
    assert [status for status, _, _ in results] == [200] * 80
    connections = {local for _, local, _ in results}
    assert len(connections) >= 80 // 5
    assert max(sum(1 for _, local, _ in results if local == c) for c in connections) <= 5


# ---------------------------------------------------------------- the middleware alone


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def headers_of(middleware, client=("127.0.0.1", 40000)) -> dict:
    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "http_version": "1.1", "client": client, "method": "GET", "path": "/"}
    asyncio.run(middleware(scope, None, send))
    return dict(sent[0]["headers"])


def test_age_limit_closes_the_first_response_past_it():
    clock = Clock()
    middleware = ConnectionRecycling(ok_app, limits=lambda: (0, 30.0), clock=clock)
    assert b"connection" not in headers_of(middleware)
    clock.now = 29.9
    assert b"connection" not in headers_of(middleware)
    clock.now = 30.0
    assert headers_of(middleware)[b"connection"] == b"close"
    clock.now = 31.0  # the client's next connection (same address here) starts a new age
    assert b"connection" not in headers_of(middleware)


def test_no_limits_leave_responses_alone():
    middleware = ConnectionRecycling(ok_app, limits=lambda: (0, 0.0))
    for _ in range(3):
        assert b"connection" not in headers_of(middleware)
    assert not middleware.connections


def test_forgotten_connections_are_bounded():
    middleware = ConnectionRecycling(ok_app, limits=lambda: (100, 0.0), capacity=8)
    for port in range(50):
        headers_of(middleware, ("127.0.0.1", port))
    assert len(middleware.connections) == 8
