"""app/slots.py: forward passes side by side, each on its share of the cores, and a lone pass
on all of them. Unit tests with a recording ``set_threads``; one test with the real model checks
that the thread count does not change a single bit of the output."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

from app.slots import ForwardSlots
from tests.test_engine import Fake, run, started, vector, wait_until

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """A ``set_threads`` that notes which thread asked for how many."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def __call__(self, n: int) -> None:
        self.calls.append((threading.current_thread().name, n))


@pytest.mark.parametrize("threads, count, shares, wide", [
    (1, 1, [1], None),
    (2, 1, [2], None),
    (2, 2, [1, 1], 2),
    (3, 2, [2, 1], 3),
    (4, 2, [2, 2], None),  # slot 1 would need OpenMP workers of its own: no wide passes
    (4, 4, [1, 1, 1, 1], 4),
    (2, 5, [1, 1], 2),  # never more slots than threads
])
def test_threads_are_shared_out_and_wide_passes_only_where_no_other_slot_needs_workers(threads, count, shares, wide):
    slots = ForwardSlots(threads, count)
    assert [s.threads for s in slots.slots] == shares
    assert slots.wide_threads == wide


def test_slots_are_handed_out_slot_0_first_then_waiters_in_arrival_order():
    async def main():
        slots = ForwardSlots(2, 2)
        first, second = await slots.acquire(), await slots.acquire()
        assert (first.index, second.index) == (0, 1) and slots.free == 0
        waiters = [asyncio.create_task(slots.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        slots.release(second)
        got = await waiters[0]
        assert got is second and not waiters[1].done()
        slots.release(first)
        assert (await waiters[1]) is first
        slots.release(got)
        assert (await waiters[2]) is second

    run(main())


def test_a_wide_pass_holds_every_slot_until_released():
    async def main():
        slots = ForwardSlots(2, 2)
        first = await slots.acquire()
        assert slots.widen(first) and slots.free == 0
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0.01)
        assert not waiter.done()  # slot 1 is idle, but the wide pass uses its core
        slots.release(first)
        assert (await waiter).index == 0

    run(main())


def test_no_wide_pass_while_another_slot_runs_or_someone_waits():
    async def main():
        slots = ForwardSlots(2, 2)
        first, second = await slots.acquire(), await slots.acquire()
        assert not slots.widen(first)
        slots.release(second)
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        second = await waiter
        slots.release(first)
        first = await slots.acquire()
        assert first.index == 0 and not slots.widen(first)  # slot 1 is busy
        slots.release(second)
        assert slots.widen(first)
        no_wide = ForwardSlots(4, 2)
        assert not no_wide.widen(await no_wide.acquire())

    run(main())


def test_a_cancelled_waiter_takes_no_slot():
    async def main():
        slots = ForwardSlots(1, 1)
        only = await slots.acquire()
        cancelled = asyncio.create_task(slots.acquire())
        patient = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        slots.release(only)
        assert (await patient) is only

    run(main())


def test_each_pass_runs_on_its_slots_thread_with_its_thread_count():
    async def main():
        recorder = Recorder()
        slots = ForwardSlots(2, 2, set_threads=recorder)
        slots.start()
        try:
            first = await slots.acquire()
            assert slots.widen(first)
            wide = await slots.run(first, lambda: threading.current_thread().name)
            slots.release(first)
            first, second = await slots.acquire(), await slots.acquire()
            names = await asyncio.gather(slots.run(first, lambda: threading.current_thread().name),
                                         slots.run(second, lambda: threading.current_thread().name))
            again = await slots.run(first, lambda: threading.current_thread().name)
        finally:
            slots.shutdown()
        assert wide == names[0] == again and names[0] != names[1]
        # slot 0 went wide (2), then back to its share (1); slot 1 set its share once; no call
        # when the count is already right
        assert recorder.calls == [(names[0], 2), (names[0], 1), (names[1], 1)] or \
            recorder.calls == [(names[0], 2), (names[1], 1), (names[0], 1)]

    run(main())


# ------------------------------------------------------------ in the engine


def test_queued_items_are_shared_over_the_free_slots_and_run_at_once():
    async def main():
        fake = Fake(gated=True)
        engine = await started(fake, slots=ForwardSlots(2, 2))
        requests = [asyncio.create_task(engine.embed("text", [f"t{i}"])) for i in range(4)]
        await wait_until(lambda: len(fake.batches) == 2, "two forward passes in flight")
        assert sorted(fake.sizes()) == [2, 2]  # both held at once: they run side by side
        fake.gate.set()
        outs = await asyncio.gather(*requests)
        for i, out in enumerate(outs):
            np.testing.assert_array_equal(out[0], vector("text", f"t{i}"))
        await engine.stop()

    run(main())


def test_a_lone_item_gets_every_thread_and_items_under_load_get_a_share():
    async def main():
        recorder = Recorder()
        fake = Fake()
        engine = await started(fake, slots=ForwardSlots(2, 2, set_threads=recorder))
        await engine.embed("text", ["alone"])
        assert [n for _, n in recorder.calls] == [2]
        fake.gate.clear()
        requests = [asyncio.create_task(engine.embed("image", [f"i{i}"])) for i in range(2)]
        await wait_until(lambda: len(fake.batches) == 3, "two passes in flight")
        fake.gate.set()
        await asyncio.gather(*requests)
        assert sorted(n for _, n in recorder.calls[1:]) == [1, 1]
        await engine.stop()

    run(main())


def test_stop_waits_for_batches_on_every_slot():
    async def main():
        fake = Fake(gated=True)
        engine = await started(fake, slots=ForwardSlots(2, 2))
        requests = [asyncio.create_task(engine.embed("image", [f"i{i}"])) for i in range(4)]
        await wait_until(lambda: len(fake.batches) == 2, "two passes in flight")
        stopping = asyncio.create_task(engine.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()
        fake.gate.set()
        await stopping
        assert all(r.done() and not r.exception() for r in requests)

    run(main())


# ------------------------------------------------------------ with the real model


@pytest.mark.slow
def test_full_size_outputs_are_bit_identical_on_one_and_two_threads(full_weights, photos):
    """What lets a pass run on its share or on every core: the vectors do not change."""
    import handspring_models
    from tests.conftest import encode

    embedder = handspring_models.load("clip_vit_b_32", full_weights, precision="auto")
    texts = ["a photo of a cat", "an astronaut riding a horse on the moon, oil painting", "x"]
    images = [encode(photos["chelsea_rgb_451x300"], "JPEG"), encode(photos["camera_L"], "PNG")]
    outputs = {}

    def embed(threads: int) -> None:
        torch.set_num_threads(threads)
        outputs[threads] = (embedder.embed_texts(texts), embedder.embed_images(images))

    for threads in (1, 2):
        worker = threading.Thread(target=embed, args=(threads,))  # the count is per thread
        worker.start()
        worker.join()
    for one, two in zip(outputs[1], outputs[2]):
        np.testing.assert_array_equal(one, two)
