"""Many requests at once, in-process: batching across requests gives the same vectors as one by
one, a bad input or a failing batch hurts only its own requests, probes answer while the model
is busy, and shutdown lets in-flight requests finish. Deterministic: the model is held on a gate
while requests queue up, instead of relying on timing. Those tests turn HANDSPRING_TAKE_TURNS
off: taking turns rightly pauses decoding while the model runs, so a held model would also hold
the decodes they wait for."""

from __future__ import annotations

import asyncio
import base64
import json
import threading

import numpy as np
import pytest

import handspring_models
from app.main import create_app
from tests.conftest import encode

pytestmark = pytest.mark.timeout(120)


class Spy:
    """The real tiny model; records every forward pass, can hold them all on a gate (every
    inference thread stays busy, so later items queue) and make the first one fail."""

    def __init__(self, inner, hold: bool = False, fail_first: bool = False):
        self.inner = inner
        self.batches: list[tuple[str, int]] = []
        self.gate = threading.Event()
        if not hold:
            self.gate.set()
        self.fail_first = fail_first
        self.entered = threading.Event()
        self._lock = threading.Lock()  # forward passes run on more than one thread

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, modality, prepared):
        with self._lock:
            first = not self.batches
            self.batches.append((modality, len(prepared)))
        self.entered.set()
        assert self.gate.wait(60), "test gate never opened"
        if first and self.fail_first:
            raise RuntimeError("simulated model failure")
        return self.inner.encode(modality, prepared)


def spy_app(settings, **spy_kwargs):
    holder: dict = {}

    def loader(s):
        holder["spy"] = Spy(handspring_models.load(s.feature, s.weights_dir, precision=s.precision,
                                                   max_pixels=s.max_image_pixels), **spy_kwargs)
        return holder["spy"]

    return create_app(settings, loader=loader), holder


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def until(predicate, what: str):
    for _ in range(6000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def post(client, body: dict):
    return await client.post("/vectorize", content=json.dumps(body).encode())


@pytest.fixture(scope="module")
def pictures(photos) -> list[bytes]:
    return [encode(photos["chelsea_tall_small"], "PNG"), encode(photos["camera_L"].resize((200, 200)), "PNG"),
            encode(photos["chelsea_rgb_451x300"], "JPEG"), encode(photos["astronaut_P"].resize((160, 120)), "GIF")]


def mixed_requests(pictures, n: int = 32) -> list[dict]:
    texts = ["a cat", "a photo of a dog on the beach at sunset, very detailed " * 5, "x", "two words",
             "the quick brown fox jumps over the lazy dog"]
    bodies = []
    for i in range(n):
        if i % 3 == 0:
            bodies.append({"texts": [texts[i % 5], texts[(i + 2) % 5]]})
        elif i % 3 == 1:
            bodies.append({"images": [b64(pictures[i % 4])]})
        else:
            bodies.append({"texts": [texts[(i + 1) % 5]], "images": [b64(pictures[(i + 1) % 4]), b64(pictures[i % 4])]})
    return bodies


def items_in(bodies) -> int:
    return sum(len(b.get("texts", [])) + len(b.get("images", [])) for b in bodies)


def test_32_concurrent_requests_are_batched_and_equal_sequential_ones(app_settings, serve_app, tiny_clip, pictures):
    app, holder = spy_app(app_settings(take_turns=False), hold=True)
    bodies = mixed_requests(pictures)

    async def main():
        async with serve_app(app) as client:
            spy, engine = holder["spy"], app.state.service.engine
            tasks = [asyncio.create_task(post(client, b)) for b in bodies]
            # Hold the model until every item of every request is prepared and queued or held.
            await until(lambda: engine.queue_depth == items_in(bodies), "all items queued")
            spy.gate.set()
            concurrent = await asyncio.gather(*tasks)
            sequential = [await post(client, b) for b in bodies]
            return concurrent, sequential, list(spy.batches)

    concurrent, sequential, batches = run(main())
    assert max(size for _, size in batches) > 1  # requests really were merged
    for body, c, s in zip(bodies, concurrent, sequential):
        assert c.status_code == 200 and s.status_code == 200
        c, s = c.json(), s.json()
        assert len(c["textVectors"]) == len(body.get("texts", [])) and len(c["imageVectors"]) == len(body.get("images", []))
        for field in ("textVectors", "imageVectors"):
            np.testing.assert_allclose(np.array(c[field]).reshape(-1, 32), np.array(s[field]).reshape(-1, 32), atol=1e-5)
        if body.get("texts"):
            np.testing.assert_allclose(c["textVectors"], tiny_clip.embed_texts(body["texts"]), atol=1e-5)
        if body.get("images"):
            images = [base64.b64decode(x) for x in body["images"]]
            np.testing.assert_allclose(c["imageVectors"], tiny_clip.embed_images(images), atol=1e-5)


def test_a_bad_image_among_concurrent_requests_fails_only_its_own(app_settings, serve_app, tiny_clip, pictures):
    app, holder = spy_app(app_settings(take_turns=False), hold=True)
    good = [{"images": [b64(pictures[i % 4])], "texts": [f"request {i}"]} for i in range(10)]
    truncated = pictures[0][: len(pictures[0]) // 2]
    bad = [{"images": [b64(b"definitely not an image")]},
           {"texts": ["fine"], "images": [b64(pictures[1]), b64(truncated)]}]

    async def main():
        async with serve_app(app) as client:
            engine = app.state.service.engine
            tasks = [asyncio.create_task(post(client, b)) for b in good[:5] + bad + good[5:]]
            bad_answers = await asyncio.gather(tasks[5], tasks[6])  # fail at decoding, before the model
            # (>=: the failed request's text may sit in the queue, cancelled, until the model is free)
            await until(lambda: engine.queue_depth >= items_in(good), "good items queued")
            holder["spy"].gate.set()
            return bad_answers, await asyncio.gather(*(tasks[:5] + tasks[7:]))

    (first_bad, second_bad), answers = run(main())
    assert first_bad.status_code == 422 and first_bad.json()["error"].startswith("images[0]: not an image")
    assert second_bad.status_code == 422 and second_bad.json()["error"].startswith("images[1]: ")
    for body, r in zip(good, answers):
        assert r.status_code == 200
        np.testing.assert_allclose(r.json()["textVectors"], tiny_clip.embed_texts(body["texts"]), atol=1e-5)
        np.testing.assert_allclose(r.json()["imageVectors"],
                                   tiny_clip.embed_images([base64.b64decode(body["images"][0])]), atol=1e-5)


def test_a_failing_forward_pass_fails_only_its_batch(app_settings, serve_app, tiny_clip):
    app, holder = spy_app(app_settings(take_turns=False), hold=True, fail_first=True)

    async def main():
        async with serve_app(app) as client:
            spy, engine = holder["spy"], app.state.service.engine
            doomed = asyncio.create_task(post(client, {"texts": ["first"]}))
            await asyncio.to_thread(spy.entered.wait, 30)
            others = [asyncio.create_task(post(client, {"texts": [f"later {i}"]})) for i in range(5)]
            await until(lambda: engine.queue_depth == 6, "later requests queued")
            spy.gate.set()
            after = await asyncio.gather(*others)
            ready = await client.get("/.well-known/ready")
            return await doomed, after, ready

    doomed, after, ready = run(main())
    assert doomed.status_code == 500 and "simulated model failure" in doomed.json()["error"]
    assert ready.status_code == 204
    for i, r in enumerate(after):
        assert r.status_code == 200
        np.testing.assert_allclose(r.json()["textVectors"][0], tiny_clip.embed_texts([f"later {i}"])[0], atol=1e-5)


def test_probes_and_meta_answer_while_the_model_is_busy(app_settings, serve_app):
    app, holder = spy_app(app_settings(take_turns=False), hold=True)

    async def main():
        async with serve_app(app) as client:
            spy = holder["spy"]
            busy = asyncio.create_task(post(client, {"texts": ["held in the model"]}))
            await asyncio.to_thread(spy.entered.wait, 30)
            # The model is mid-forward-pass (held): the probes must not wait for it.
            ready = await asyncio.wait_for(client.get("/.well-known/ready"), 10)
            live = await asyncio.wait_for(client.head("/.well-known/live"), 10)
            meta = await asyncio.wait_for(client.get("/meta"), 10)
            metrics = await asyncio.wait_for(client.get("/metrics"), 10)
            assert not busy.done()
            spy.gate.set()
            return ready, live, meta, metrics, await busy

    ready, live, meta, metrics, busy = run(main())
    assert ready.status_code == 204 and live.status_code == 204 and meta.status_code == 200
    assert "handspring_queue_depth 1.0" in metrics.text
    assert busy.status_code == 200


def test_shutdown_lets_in_flight_requests_finish(app_settings, tiny_clip):
    import httpx

    app, holder = spy_app(app_settings(take_turns=False), hold=True)

    async def main():
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        service = app.state.service
        await asyncio.wait_for(service.loaded.wait(), 60)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://handspring") as client:
            spy = holder["spy"]
            in_flight = [asyncio.create_task(post(client, {"texts": [f"in flight {i}"]})) for i in range(3)]
            await asyncio.to_thread(spy.entered.wait, 30)
            await until(lambda: service.engine.queue_depth == 3, "in-flight requests queued")
            shutdown = asyncio.create_task(lifespan.__aexit__(None, None, None))
            await until(lambda: service.state == "stopping", "shutdown started")
            await asyncio.sleep(0.05)
            assert not shutdown.done()  # waits for the requests held in the model
            late = await client.post("/vectorize", content=b'{"texts": ["too late"]}')
            not_ready = await client.get("/.well-known/ready")
            spy.gate.set()
            answers = await asyncio.gather(*in_flight)
            await asyncio.wait_for(shutdown, 30)
            return answers, late, not_ready, service.state

    answers, late, not_ready, state = run(main())
    for i, r in enumerate(answers):
        assert r.status_code == 200
        np.testing.assert_allclose(r.json()["textVectors"][0], tiny_clip.embed_texts([f"in flight {i}"])[0], atol=1e-5)
    assert late.status_code == 503 and late.json() == {"error": "shutting down"}
    assert not_ready.status_code == 503
    assert state == "stopped"


def test_taking_turns_serves_concurrent_mixed_requests_like_sequential_ones(app_settings, serve_app, pictures):
    """The default (decoding and the model take turns): every request completes, same vectors."""
    app, holder = spy_app(app_settings(take_turns=True))
    bodies = mixed_requests(pictures)

    async def main():
        async with serve_app(app) as client:
            concurrent = await asyncio.gather(*(post(client, b) for b in bodies))
            sequential = [await post(client, b) for b in bodies]
            return concurrent, sequential

    concurrent, sequential = run(main())
    for c, s in zip(concurrent, sequential):
        assert c.status_code == 200 and s.status_code == 200
        for field in ("textVectors", "imageVectors"):
            np.testing.assert_allclose(np.array(c.json()[field]).reshape(-1), np.array(s.json()[field]).reshape(-1),
                                       atol=1e-5)
