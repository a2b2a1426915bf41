"""Weaviate's load on a vectorizer: N concurrent clients, each sending ONE object per request
(one caption, or one base64 photo) and waiting for the answer before sending the next.

Bodies are built once, before the clock starts, so the client spends as little CPU as it can
(it shares the machine with the server). Each run starts with a warm-up (one request per client,
not counted), then runs for a fixed duration or request count; throughput is completed requests
over the time from the start until the last answer.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import statistics
import time

import httpx

HEADERS = {"Content-Type": "application/json"}


def text_body(text: str) -> bytes:
    return json.dumps({"texts": [text]}).encode()


def image_body(data: bytes) -> bytes:
    return json.dumps({"images": [base64.b64encode(data).decode("ascii")]}).encode()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def _check(response: httpx.Response, field: str) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
    vectors = response.json().get(field)
    if not isinstance(vectors, list) or len(vectors) != 1:
        raise RuntimeError(f"expected one vector in {field}, got {str(vectors)[:200]}")


async def _run(url: str, bodies: list[bytes], field: str, concurrency: int, duration: float | None,
               count: int | None, warmup: bool) -> dict:
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    timeout = httpx.Timeout(120.0)
    next_body = itertools.cycle(bodies).__next__
    latencies: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout, headers=HEADERS) as client:
        async def one() -> float:
            t = time.perf_counter()
            r = await client.post("/vectorize", content=next_body())
            elapsed = time.perf_counter() - t
            _check(r, field)
            return elapsed

        if warmup:
            await asyncio.gather(*(one() for _ in range(concurrency)))

        issued = 0
        cpu0 = time.process_time()
        start = time.perf_counter()
        deadline = start + duration if duration is not None else math.inf
        last_done = start

        async def client_loop() -> None:
            nonlocal issued, last_done
            while time.perf_counter() < deadline and (count is None or issued < count):
                issued += 1
                try:
                    latencies.append(await one())
                except Exception as e:  # keep going, report it
                    errors.append(f"{type(e).__name__}: {e}")
                    if len(errors) > 20:
                        raise
                last_done = time.perf_counter()

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        client_cpu = time.process_time() - cpu0
    elapsed = max(last_done - start, 1e-9)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": elapsed,
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_ms": (statistics.fmean(latencies) * 1000) if latencies else math.nan,
        # the load generator shares the machine with the server: the CPU it took (cores, on average)
        "client_cores": client_cpu / elapsed,
    }


def run_load(url: str, bodies: list[bytes], field: str, concurrency: int, duration: float | None = None,
             count: int | None = None, warmup: bool = True) -> dict:
    """Closed-loop load: ``concurrency`` clients for ``duration`` seconds or ``count`` requests in all."""
    if duration is None and count is None:
        raise ValueError("give a duration or a count")
    return asyncio.run(_run(url, bodies, field, concurrency, duration, count, warmup))


def sequential(url: str, bodies: list[bytes], field: str, count: int, warmup: int = 3) -> dict:
    """One request at a time (nothing else in flight): the latency of a lone request."""
    latencies = []
    with httpx.Client(base_url=url, timeout=60.0, headers=HEADERS) as client:
        for i in range(warmup + count):
            body = bodies[i % len(bodies)]
            t = time.perf_counter()
            r = client.post("/vectorize", content=body)
            elapsed = time.perf_counter() - t
            _check(r, field)
            if i >= warmup:
                latencies.append(elapsed)
    return {
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "min_ms": min(latencies) * 1000,
    }


def vectors(url: str, texts: list[str], images: list[bytes]) -> dict[str, list]:
    """The server's vectors for each input, one request per object (for fidelity)."""
    out: dict[str, list] = {"text": [], "image": []}
    with httpx.Client(base_url=url, timeout=120.0, headers=HEADERS) as client:
        for text in texts:
            r = client.post("/vectorize", content=text_body(text))
            _check(r, "textVectors")
            out["text"].append(r.json()["textVectors"][0])
        for data in images:
            r = client.post("/vectorize", content=image_body(data))
            _check(r, "imageVectors")
            out["image"].append(r.json()["imageVectors"][0])
    return out
