"""The service's limits, in-process: the cap on requests in flight (429), the deadline (503), the
memory budget for decoded inputs, per-request caps on heavy media, the drain deadline, server
faults that are not the client's, and the metrics that show them. The model is held on a gate
where a test needs work to pile up (tests/test_app_concurrency.py's Spy)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time

import pytest

import handspring_models
from app.errors import ApiError
from app.main import create_app
from tests import media
from tests.conftest import encode
from tests.test_app_concurrency import Spy, b64, post, run, spy_app, until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def picture(photos) -> bytes:
    return encode(photos["chelsea_tall_small"], "PNG")


# ---------------------------------------------------------------- the cap on requests in flight

def test_a_request_past_the_cap_gets_429_with_retry_after_and_its_body_is_never_read(app_settings, serve_app):
    app, holder = spy_app(app_settings(take_turns=False, max_concurrent_requests=2), hold=True)
    pulled = []

    async def body():
        pulled.append(True)
        yield b'{"texts": ["third"]}'

    async def main():
        async with serve_app(app) as client:
            held = [asyncio.create_task(post(client, {"texts": [f"held {i}"]})) for i in range(2)]
            await until(lambda: app.state.service.admission.in_flight == 2, "two requests in flight")
            refused = await client.post("/vectorize", content=body())
            metrics = (await client.get("/metrics")).text
            holder["spy"].gate.set()
            return refused, await asyncio.gather(*held), metrics

    refused, held, metrics = run(main())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "HANDSPRING_MAX_CONCURRENT_REQUESTS" in refused.json()["error"]
    assert pulled == []  # refused before the body was read
    assert [r.status_code for r in held] == [200, 200]
    assert 'handspring_rejected_requests_total{reason="concurrency"} 1.0' in metrics


# ---------------------------------------------------------------- the deadline

def test_a_request_past_its_deadline_gets_503_and_its_queued_items_are_dropped_unencoded(app_settings, serve_app):
    app, holder = spy_app(app_settings(take_turns=False, request_timeout_s=0.5, inference_workers=1), hold=True)

    async def main():
        async with serve_app(app) as client:
            spy, engine = holder["spy"], app.state.service.engine
            first = asyncio.create_task(post(client, {"texts": ["in the model"]}))
            await asyncio.to_thread(spy.entered.wait, 10)
            late = await post(client, {"texts": ["queued behind it", "and another"]})
            depth_after = engine.queue_depth
            first = await first  # its pass outlived its deadline too: answered at the deadline
            spy.gate.set()
            metrics = (await client.get("/metrics")).text
            return first, late, depth_after, list(spy.batches), metrics

    first, late, depth_after, batches, metrics = run(main())
    assert first.status_code == 503 and late.status_code == 503 and late.headers["retry-after"]
    assert "HANDSPRING_REQUEST_TIMEOUT_S" in late.json()["error"]
    assert depth_after == 1  # only the item in the model is left: the late ones left the queue at once
    assert batches == [("text", 1)]  # and were never encoded
    assert "handspring_timed_out_requests_total 2.0" in metrics


# ---------------------------------------------------------------- the memory budget

def test_inputs_wait_for_room_in_the_budget_before_they_are_decoded(app_settings, serve_app, picture):
    decoded = []

    class Counting(Spy):
        def prepare(self, modality, item):
            decoded.append(modality)
            return self.inner.prepare(modality, item)

    settings = app_settings(take_turns=False, max_prepared_mb=1, inference_workers=1)

    def loader(s):
        holder["spy"] = Counting(handspring_models.load(s.feature, s.weights_dir, precision=s.precision), hold=True)
        return holder["spy"]

    holder: dict = {}
    app = create_app(settings, loader=loader)

    async def main():
        async with serve_app(app) as client:
            budget = app.state.service.budget
            size = holder["spy"].prepared_nbytes("image")
            tasks = [asyncio.create_task(post(client, {"images": [b64(picture)] * 4})) for _ in range(3)]
            await asyncio.to_thread(holder["spy"].entered.wait, 10)
            await until(lambda: budget.waiting == 11, "the other eleven images waiting for room")
            held = (budget.used, len(decoded))
            holder["spy"].gate.set()
            answers = await asyncio.gather(*tasks)
            return size, budget.capacity, held, answers, budget.used

    size, capacity, (used, decoded_while_held), answers, used_after = run(main())
    assert size * 2 > capacity >= size  # room for one decoded image at a time
    assert used == size and decoded_while_held == 1
    assert all(a.status_code == 200 and len(a.json()["imageVectors"]) == 4 for a in answers)
    assert len(decoded) == 12 and used_after == 0


# ---------------------------------------------------------------- heavy media per request

@pytest.fixture(scope="module")
def bind_app(app_settings, imagebind_tiny_weights):
    def make(**overrides):
        return create_app(app_settings(weights_dir=imagebind_tiny_weights, feature="imagebind_huge", **overrides))

    return make


def test_more_videos_than_the_per_request_cap_is_413_before_any_decoding(bind_app, serve_app):
    async def main():
        async with serve_app(bind_app(max_videos_per_request=1)) as client:
            return await post(client, {"video": [b64(b"not even a video")] * 2})

    r = run(main())
    assert r.status_code == 413 and "HANDSPRING_MAX_VIDEOS_PER_REQUEST" in r.json()["error"]


def test_a_requests_audio_shares_its_seconds_over_its_files(bind_app, serve_app):
    two_seconds = b64(media.wav(2.0))

    async def main():
        async with serve_app(bind_app(max_audio_seconds_per_request=3.0)) as client:
            return await post(client, {"audio": [two_seconds]}), await post(client, {"audio": [two_seconds] * 2})

    alone, shared = run(main())
    assert alone.status_code == 200 and len(alone.json()["audioVectors"]) == 1
    assert shared.status_code == 422
    error = shared.json()["error"]
    assert error.startswith(("audio[0]", "audio[1]")) and "limit of 1.5 s" in error  # each file: 3 s / 2
    assert "HANDSPRING_MAX_AUDIO_SECONDS_PER_REQUEST" in error


# ---------------------------------------------------------------- server faults

class Faulty(Spy):
    """Fails to prepare an image with what the test says (the machine's trouble, or the input's)."""

    error: BaseException | None = None

    def prepare(self, modality, item):
        if modality == "image" and self.error is not None:
            raise self.error
        return self.inner.prepare(modality, item)


@pytest.mark.parametrize("error, status", [
    (MemoryError(), 503),
    (OSError(errno.EMFILE, "Too many open files"), 503),
    (OSError(errno.EIO, "Input/output error"), 500),
    (handspring_models.InvalidInputError("not an image"), 422),
], ids=["MemoryError", "EMFILE", "EIO", "InvalidInputError"])
def test_only_the_inputs_own_defects_are_4xx(app_settings, serve_app, picture, caplog, error, status):
    def loader(s):
        spy = Faulty(handspring_models.load(s.feature, s.weights_dir, precision=s.precision))
        spy.error = error
        return spy

    app = create_app(app_settings(), loader=loader)

    async def main():
        async with serve_app(app) as client:
            return await post(client, {"images": [b64(picture)]})

    with caplog.at_level(logging.ERROR, logger="handspring.app"):
        r = run(main())
    assert r.status_code == status and r.json()["error"].count("images[0]") == 1
    server_fault = status >= 500
    assert any("preparing an input failed" in rec.getMessage() for rec in caplog.records) == server_fault


# ---------------------------------------------------------------- the drain

def test_the_drain_answers_what_is_left_at_its_deadline_with_503_and_ready_says_so(app_settings, serve_app):
    app, holder = spy_app(app_settings(take_turns=False, drain_timeout_s=0.3), hold=True)

    async def main():
        async with serve_app(app) as client:
            service = app.state.service
            held = asyncio.create_task(post(client, {"texts": ["held in the model"]}))
            await asyncio.to_thread(holder["spy"].entered.wait, 10)
            drain = asyncio.create_task(service.drain())
            await until(lambda: service.state == "stopping", "the drain to begin")
            ready, live = await client.get("/.well-known/ready"), await client.get("/.well-known/live")
            refused = await post(client, {"texts": ["new work"]})
            answer = await held
            await drain
            holder["spy"].gate.set()
            return ready, live, refused, answer, service.work_abandoned

    ready, live, refused, answer, abandoned = run(main())
    assert ready.status_code == 503 and live.status_code == 204
    assert refused.status_code == 503 and refused.json()["error"] == "shutting down"
    assert answer.status_code == 503 and "drain deadline" in answer.json()["error"]
    assert abandoned is True


def test_a_request_taken_in_before_the_drain_is_served_during_it(app_settings, serve_app):
    """A request admitted before SIGTERM whose body was still arriving when the drain began is
    served, not refused: the drain owes every request in flight its time to finish."""
    app, _ = spy_app(app_settings(drain_timeout_s=30))

    async def main():
        async with serve_app(app):
            service = app.state.service
            arrived = time.monotonic()
            with service.admit():  # taken in; its body not read yet
                drain = asyncio.create_task(service.drain())
                await until(lambda: service.state == "stopping", "the drain to begin")
                late = time.monotonic()
                answer = await service.vectorize(b'{"texts": ["taken in before the drain"]}', arrived)
                with pytest.raises(ApiError) as refused:
                    await service.vectorize(b'{"texts": ["arrived after it began"]}', late)
            await asyncio.wait_for(drain, 10)
            return json.loads(answer), refused.value, service.work_abandoned

    answer, refused, abandoned = run(main())
    assert len(answer["textVectors"]) == 1
    assert refused.status == 503 and str(refused) == "shutting down"
    assert abandoned is False


def test_a_drain_with_nothing_in_flight_ends_at_once_and_abandons_nothing(app_settings, serve_app):
    app, _ = spy_app(app_settings(drain_timeout_s=60))

    async def main():
        async with serve_app(app) as client:
            assert (await post(client, {"texts": ["done before the drain"]})).status_code == 200
            await asyncio.wait_for(app.state.service.drain(), 10)
            return app.state.service.work_abandoned

    assert run(main()) is False


# ---------------------------------------------------------------- metrics

def test_metrics_show_queue_wait_first_forward_and_the_budget_beside_its_use(app_settings, serve_app, picture):
    app, _ = spy_app(app_settings(max_prepared_mb=50))

    async def main():
        async with serve_app(app) as client:
            assert (await post(client, {"texts": ["a"], "images": [b64(picture)]})).status_code == 200
            return (await client.get("/metrics")).text

    text = run(main())
    assert 'handspring_queue_wait_seconds_count{modality="image"} 1.0' in text
    assert 'handspring_queue_wait_seconds_count{modality="text"} 1.0' in text
    assert "handspring_time_to_first_forward_seconds_count 1.0" in text
    assert "handspring_prepared_budget_bytes 5e+07" in text and "handspring_prepared_bytes 0.0" in text
    for name in ("handspring_abandoned_requests_total", "handspring_timed_out_requests_total",
                 "handspring_requests_in_flight", "handspring_max_concurrent_requests 256.0"):
        assert name in text


def test_a_pixel_limit_past_pillows_guard_raises_the_guard_in_the_service_process(tiny_weights):
    """The library leaves Pillow's global alone; the service, which owns its process, raises it
    when HANDSPRING_MAX_IMAGE_PIXELS asks for more (in a fresh interpreter: it is process-wide)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("from PIL import Image; from app.loading import default_loader; from app.settings import Settings; "
            "before = Image.MAX_IMAGE_PIXELS; "
            f"default_loader(Settings(weights_dir={str(tiny_weights)!r}, precision='fp32', max_image_pixels=300_000_000)); "
            "print(before, Image.MAX_IMAGE_PIXELS)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    before, after = map(int, out.stdout.split())
    assert before < 300_000_000 == after
