"""Unit tests of app/engine.py with a fake embedder: batching across requests, limits, error
isolation, draining. Nothing here depends on timing: batches are made deterministic by holding
the model (a gate) while requests queue up, or by a window far longer than the test."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from app.budget import MemoryBudget
from app.engine import DeadlineExceeded, EncodeError, Engine, EngineClosed, ItemError, Job, PrepareFault, group_by_length

pytestmark = pytest.mark.timeout(60)
LONG = 10_000.0  # ms: a window no test ever waits out


class Fake:
    """Text items are strings (their length is their token count); image items are strings too.
    ``encode`` records each batch, can be held on a gate, and fails on a batch holding "boom"."""

    modalities = ("text", "image")
    dim = 3

    def __init__(self, gated: bool = False):
        self.batches: list[tuple[str, list]] = []
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def prepare(self, modality, item):
        if modality not in self.modalities:
            raise ValueError(f"no {modality}")
        if item == "bad":
            raise ValueError("not an image")
        if item == "crash":
            raise RuntimeError("bug in prepare")
        return item

    def encode(self, modality, prepared):
        with self.lock:
            self.batches.append((modality, list(prepared)))
        self.entered.set()
        assert self.gate.wait(30), "test gate never opened"
        if "boom" in prepared:
            raise RuntimeError("model exploded")
        return np.stack([vector(modality, p) for p in prepared])

    def sizes(self, modality=None):
        return [len(b) for m, b in self.batches if modality in (None, m)]


def vector(modality: str, item: str) -> np.ndarray:
    return np.array([len(item), sum(map(ord, item)) % 997, 1.0 if modality == "text" else 2.0], np.float32)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def wait_until(predicate, what: str):
    for _ in range(3000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def started(fake, **kwargs) -> Engine:
    engine = Engine(fake, **{"batch_window_ms": 1.0, "max_batch": 32, "preprocess_workers": 2, **kwargs})
    await engine.start()
    return engine


def test_each_request_gets_its_own_rows_in_order():
    async def main():
        fake = Fake()
        engine = await started(fake)
        requests = [[f"text {i} {'x' * j}" for j in range(i % 4 + 1)] for i in range(20)]
        results = await asyncio.gather(*(engine.embed("text", r) for r in requests),
                                       *(engine.embed("image", [f"img{i}"]) for i in range(5)))
        for r, out in zip(requests, results):
            np.testing.assert_array_equal(out, np.stack([vector("text", t) for t in r]))
        for i, out in enumerate(results[20:]):
            np.testing.assert_array_equal(out, vector("image", f"img{i}")[None])
        assert sum(fake.sizes()) == sum(map(len, requests)) + 5
        await engine.stop()

    run(main())


def test_concurrent_requests_are_merged_into_one_batch():
    """Hold the model on a first request; 10 more single-item requests queue meanwhile and go
    through together in ONE forward pass."""
    async def main():
        fake = Fake(gated=True)
        engine = await started(fake)
        first = asyncio.create_task(engine.embed("text", ["first"]))
        await asyncio.to_thread(fake.entered.wait, 10)
        others = [asyncio.create_task(engine.embed("text", [f"request {i}"])) for i in range(10)]
        await wait_until(lambda: engine.queue_depth == 11, "10 queued items")
        fake.gate.set()
        await first
        outs = await asyncio.gather(*others)
        for i, out in enumerate(outs):
            np.testing.assert_array_equal(out[0], vector("text", f"request {i}"))
        assert fake.sizes() == [1, 10]
        assert engine.queue_depth == 0
        await engine.stop()

    run(main())


def test_window_waits_for_more_items_until_max_batch():
    """A window much longer than the test: the batch goes as soon as max_batch items are there."""
    async def main():
        fake = Fake()
        engine = await started(fake, batch_window_ms=LONG, max_batch=8)
        outs = await asyncio.gather(*(engine.embed("image", [f"i{k}"]) for k in range(8)))
        assert fake.sizes() == [8]
        assert [o[0, 1] for o in outs] == [vector("image", f"i{k}")[1] for k in range(8)]
        await engine.stop()

    run(main())


def test_a_lone_item_runs_at_once_whatever_the_window():
    """Nothing else is on its way, so waiting out the window would only add latency."""
    async def main():
        fake = Fake()
        engine = await started(fake, batch_window_ms=LONG, max_batch=8)
        out = await engine.embed("text", ["alone"])
        np.testing.assert_array_equal(out[0], vector("text", "alone"))
        assert fake.sizes() == [1]
        await engine.stop()

    run(main())


def test_window_waits_for_items_still_being_prepared():
    """A prepared item waits (within the window) for items of its modality still being decoded."""
    async def main():
        fake = Fake()
        released = threading.Event()
        original = fake.prepare

        def prepare(modality, item):
            if item == "slow":
                assert released.wait(30)
            return original(modality, item)

        fake.prepare = prepare
        engine = await started(fake, batch_window_ms=LONG, max_batch=8)
        fast = asyncio.create_task(engine.embed("image", ["fast"]))
        slow = asyncio.create_task(engine.embed("image", ["slow"]))
        await wait_until(lambda: engine.queue_depth == 1, "the fast item prepared and queued")
        await asyncio.sleep(0.05)
        assert not fast.done() and fake.batches == []  # waiting for its company
        released.set()
        await asyncio.gather(fast, slow)
        assert fake.sizes() == [2]
        await engine.stop()

    run(main())


def test_zero_window_still_batches_what_queued_meanwhile():
    async def main():
        fake = Fake(gated=True)
        engine = await started(fake, batch_window_ms=0)
        first = asyncio.create_task(engine.embed("image", ["a"]))
        await asyncio.to_thread(fake.entered.wait, 10)
        rest = [asyncio.create_task(engine.embed("image", [f"b{i}"])) for i in range(5)]
        await wait_until(lambda: engine.queue_depth == 6, "5 queued")
        fake.gate.set()
        await asyncio.gather(first, *rest)
        assert fake.sizes() == [1, 5]
        await engine.stop()

    run(main())


def test_max_batch_is_respected_and_big_requests_are_split():
    async def main():
        fake = Fake(gated=True)
        engine = await started(fake, max_batch=8)
        first = asyncio.create_task(engine.embed("image", ["first"]))
        await asyncio.to_thread(fake.entered.wait, 10)
        big = asyncio.create_task(engine.embed("image", [f"x{i}" for i in range(13)]))
        small = [asyncio.create_task(engine.embed("image", [f"y{i}"])) for i in range(6)]
        await wait_until(lambda: engine.queue_depth == 20, "19 queued")
        fake.gate.set()
        await first
        out = await big
        np.testing.assert_array_equal(out, np.stack([vector("image", f"x{i}") for i in range(13)]))
        for i, t in enumerate(small):
            np.testing.assert_array_equal((await t)[0], vector("image", f"y{i}"))
        sizes = fake.sizes()
        assert sizes[0] == 1 and max(sizes) == 8 and sum(sizes) == 20 and len(sizes) == 4
        await engine.stop()

    run(main())


def test_a_bad_item_fails_only_its_own_request():
    async def main():
        fake = Fake(gated=True)
        engine = await started(fake)
        blocker = asyncio.create_task(engine.embed("image", ["first"]))
        await asyncio.to_thread(fake.entered.wait, 10)
        bad = asyncio.create_task(engine.embed("image", ["ok", "ok2", "bad"], label="images"))
        good = [asyncio.create_task(engine.embed("image", [f"g{i}"])) for i in range(4)]
        with pytest.raises(ItemError) as info:
            await bad
        assert str(info.value) == "images[2]: not an image" and info.value.index == 2
        await wait_until(lambda: engine.queue_depth == 5, "good items queued")
        fake.gate.set()
        await blocker
        for i, t in enumerate(good):
            np.testing.assert_array_equal((await t)[0], vector("image", f"g{i}"))
        assert "ok" not in [p for _, b in fake.batches for p in b]  # the failed request's items never ran
        await engine.stop()

    run(main())


def test_an_internal_prepare_error_is_not_a_client_error():
    async def main():
        engine = await started(Fake())
        with pytest.raises(RuntimeError, match="bug in prepare"):
            await engine.embed("text", ["fine", "crash"])
        await engine.stop()

    run(main())


def test_encode_failure_fails_only_that_batch_and_the_engine_goes_on():
    async def main():
        fake = Fake(gated=True)
        engine = await started(fake)
        doomed_first = asyncio.create_task(engine.embed("text", ["first"]))
        await asyncio.to_thread(fake.entered.wait, 10)
        # These three share the next text batch, which fails because it holds "boom".
        doomed = [asyncio.create_task(engine.embed("text", [t])) for t in ("boom", "x", "y")]
        # An image request, in the image lane's own batch: unaffected.
        image = asyncio.create_task(engine.embed("image", ["pic"]))
        await wait_until(lambda: engine.queue_depth == 5, "4 queued")
        fake.gate.set()
        await doomed_first
        for t in doomed:
            with pytest.raises(EncodeError, match="model exploded"):
                await t
        np.testing.assert_array_equal((await image)[0], vector("image", "pic"))
        # the engine still serves
        np.testing.assert_array_equal((await engine.embed("text", ["after"]))[0], vector("text", "after"))
        assert sorted(fake.sizes("text")) == [1, 1, 3]
        await engine.stop()

    run(main())


def test_stop_drains_in_flight_requests_then_refuses_new_ones():
    async def main():
        fake = Fake(gated=True)
        engine = await started(fake)
        tasks = [asyncio.create_task(engine.embed("text", [f"t{i}", f"u{i}"])) for i in range(5)]
        tasks += [asyncio.create_task(engine.embed("image", [f"i{i}"])) for i in range(3)]
        await asyncio.to_thread(fake.entered.wait, 10)
        stopping = asyncio.create_task(engine.stop())
        await wait_until(lambda: not engine.running, "the stop to begin")
        assert not stopping.done()  # the model is held: requests are still in flight
        with pytest.raises(EngineClosed):
            await engine.embed("text", ["too late"])
        fake.gate.set()
        await stopping
        results = await asyncio.gather(*tasks)  # every accepted request finished
        for i in range(5):
            np.testing.assert_array_equal(results[i], np.stack([vector("text", f"t{i}"), vector("text", f"u{i}")]))
        assert engine.queue_depth == 0 and engine.active_requests == 0
        with pytest.raises(EngineClosed):
            await engine.embed("image", ["after stop"])

    run(main())


def test_cancelled_requests_are_skipped_and_do_not_hurt_others():
    async def main():
        fake = Fake(gated=True)
        engine = await started(fake)
        first = asyncio.create_task(engine.embed("text", ["first"]))
        await asyncio.to_thread(fake.entered.wait, 10)
        gone = asyncio.create_task(engine.embed("text", ["client went away"]))
        kept = asyncio.create_task(engine.embed("text", ["kept"]))
        await wait_until(lambda: engine.queue_depth == 3, "2 queued")
        gone.cancel()
        fake.gate.set()
        await first
        np.testing.assert_array_equal((await kept)[0], vector("text", "kept"))
        assert gone.cancelled()
        assert ["kept"] in [b for _, b in fake.batches]
        await engine.stop()

    run(main())


def test_texts_are_grouped_by_length_and_answers_keep_input_order():
    async def main():
        fake = Fake(gated=True)
        engine = await started(fake)
        first = asyncio.create_task(engine.embed("image", ["hold"]))
        await asyncio.to_thread(fake.entered.wait, 10)
        texts = ["a" * 70, "bb", "c" * 60, "dd", "eee", "f" * 65]
        task = asyncio.create_task(engine.embed("text", texts))
        await wait_until(lambda: engine.queue_depth == 7, "6 queued")
        fake.gate.set()
        await first
        np.testing.assert_array_equal(await task, np.stack([vector("text", t) for t in texts]))
        text_batches = [b for m, b in fake.batches if m == "text"]
        assert sorted(map(sorted, text_batches)) == sorted([sorted(["bb", "dd", "eee"]), sorted(["c" * 60, "f" * 65, "a" * 70])])
        await engine.stop()

    run(main())


def test_group_by_length():
    assert group_by_length([]) == []
    assert group_by_length([5]) == [[0]]
    assert group_by_length([3, 5, 7, 4]) == [[0, 3, 1, 2]]  # all below the floor: one group
    groups = group_by_length([77, 2, 3, 76, 2, 40])
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert [1, 4, 2] in groups and groups[-1][-2:] == [3, 0]
    for g in groups:  # padding never more than doubles the work of a group
        lens = [max([77, 2, 3, 76, 2, 40][i], 8) for i in g]
        assert len(g) * max(lens) <= 2 * sum(lens)


def test_empty_requests_missing_modalities_and_queue_depth():
    async def main():
        fake = Fake()
        engine = await started(fake)
        assert (await engine.embed("text", [])).shape == (0, 3)
        with pytest.raises(ValueError, match="audio"):
            await engine.embed("audio", ["x"])
        assert engine.queue_depth == 0 and engine.preparing == 0
        await engine.stop()
        await engine.stop()  # idempotent

    run(main())


def test_observer_sees_every_batch_and_a_broken_observer_is_harmless():
    class Seen:
        def __init__(self):
            self.batches, self.errors = [], []

        def on_batch(self, modality, size, seconds):
            assert seconds >= 0
            self.batches.append((modality, size))

        def on_encode_error(self, modality, size):
            self.errors.append((modality, size))

    class Broken:
        def on_batch(self, *a):
            raise RuntimeError("metrics down")

        on_encode_error = on_batch

    async def main():
        seen = Seen()
        engine = await started(Fake(), observer=seen)
        await engine.embed("text", ["a", "b"])
        with pytest.raises(EncodeError):
            await engine.embed("image", ["boom"])
        assert seen.batches == [("text", 2)] and seen.errors == [("image", 1)]
        await engine.stop()
        engine = await started(Fake(), observer=Broken())
        assert (await engine.embed("text", ["a"])).shape == (1, 3)
        with pytest.raises(EncodeError):
            await engine.embed("text", ["boom"])
        await engine.stop()

    run(main())


def test_encode_returning_the_wrong_shape_is_an_encode_error():
    class Short(Fake):
        def encode(self, modality, prepared):
            return np.zeros((len(prepared) - 1, 3), np.float32)

    async def main():
        engine = await started(Short())
        with pytest.raises(EncodeError, match="shape"):
            await engine.embed("text", ["a", "b"])
        await engine.stop()

    run(main())


def test_a_dead_lane_fails_new_items_instead_of_hanging():
    async def main():
        engine = await started(Fake())
        lane = engine._lanes["text"]
        lane.task.cancel()  # simulate a crashed lane
        await asyncio.gather(lane.task, return_exceptions=True)
        with pytest.raises(EngineClosed):
            await engine.embed("text", ["a"])
        assert (await engine.embed("image", ["b"])).shape == (1, 3)  # the other lane still serves
        await engine.stop()

    run(main())


def test_cpu_gate_lets_decodes_share_and_the_forward_pass_run_alone():
    from app.cpu_gate import CpuGate

    gate = CpuGate()
    log: list[str] = []
    both_decoding = threading.Barrier(2, timeout=10)
    forward_waiting = threading.Event()

    def decode(name):
        with gate.decoding():
            log.append(f"{name} in")
            both_decoding.wait()  # two decodes are inside together
            assert forward_waiting.wait(10)
            log.append(f"{name} out")

    def forward():
        forward_waiting.set()
        with gate.forward_pass():
            log.append("forward")

    decoders = [threading.Thread(target=decode, args=(n,)) for n in ("a", "b")]
    for t in decoders:
        t.start()
    model = threading.Thread(target=forward)
    model.start()
    for t in (*decoders, model):
        t.join(10)
    assert log.index("forward") > max(log.index("a out"), log.index("b out"))  # waited for both decodes
    late: list[str] = []
    with gate.forward_pass():  # while the model has its turn, a new decode waits
        t = threading.Thread(target=lambda: gate.decoding().__enter__() or late.append("decoded"))
        t.start()
        t.join(0.2)
        assert late == []
    t.join(10)
    assert late == ["decoded"]


def test_cpu_gate_does_not_starve_decoding_under_back_to_back_forward_passes():
    from app.cpu_gate import CpuGate

    gate = CpuGate()
    stop = threading.Event()
    passes = []

    def model():
        while not stop.is_set():  # one forward pass after another, as under a steady text load
            with gate.forward_pass():
                passes.append(1)
                stop.wait(0.002)

    runner = threading.Thread(target=model)
    runner.start()
    try:
        decoded = threading.Event()

        def decode():
            with gate.decoding():
                decoded.set()

        worker = threading.Thread(target=decode)
        worker.start()
        assert decoded.wait(10), "a decode never got its turn"
        worker.join(10)
    finally:
        stop.set()
        runner.join(10)
    assert passes


def test_short_texts_tokenize_on_the_loop_and_long_ones_in_a_worker():
    from app.engine import INLINE_TEXT_CHARS

    async def main():
        fake = Fake()
        threads: dict[str, str] = {}
        original = fake.prepare

        def prepare(modality, item):
            threads[item[:5]] = threading.current_thread().name
            return original(modality, item)

        fake.prepare = prepare
        engine = await started(fake)
        await engine.embed("text", ["short"])
        await engine.embed("text", ["long " + "x" * INLINE_TEXT_CHARS])
        await engine.stop()
        return threads

    threads = run(main())
    assert threads["short"] == threading.main_thread().name
    assert threads["long "].startswith("handspring-prep")


class SlowDecoding(Fake):
    """Images take their turn on a decode gate; ``decoded`` lists what was decoded."""

    def __init__(self):
        super().__init__()
        self.decode_gate = threading.Event()
        self.decoding = threading.Event()
        self.decoded: list[str] = []

    def prepare(self, modality, item):
        if modality == "image":
            self.decoding.set()
            assert self.decode_gate.wait(30), "decode gate never opened"
            self.decoded.append(item)
        return super().prepare(modality, item)

    def prepared_nbytes(self, modality):
        return 100


def test_a_cancelled_request_leaves_no_work_behind_and_gives_its_budget_back():
    async def main():
        fake = SlowDecoding()
        budget = MemoryBudget(250)  # two items decoded or queued at a time
        engine = await started(fake, preprocess_workers=1, budget=budget)
        gone = asyncio.create_task(engine.embed("image", [f"i{n}" for n in range(10)]))
        await asyncio.to_thread(fake.decoding.wait, 10)
        await wait_until(lambda: budget.waiting == 8, "the rest waiting for room")
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        # The decode under way keeps its share until it ends; the rest is given back at once.
        await wait_until(lambda: budget.used == 100 and budget.waiting == 0, "the budget given back")
        fake.decode_gate.set()  # the decode under way finishes; nothing after it starts
        await wait_until(lambda: budget.used == 0, "the last share given back")
        kept = await engine.embed("image", ["after"])
        await engine.stop()
        return fake.decoded, kept, engine.queue_depth

    decoded, kept, depth = run(main())
    assert decoded == ["i0", "after"]  # of the cancelled request, only the decode already running
    np.testing.assert_array_equal(kept[0], vector("image", "after"))
    assert depth == 0


def test_a_job_past_its_deadline_is_not_decoded():
    async def main():
        fake = SlowDecoding()
        fake.decode_gate.set()
        engine = await started(fake)
        with pytest.raises(DeadlineExceeded):
            await engine.embed("image", ["late"], job=Job(deadline=0.0))
        await engine.stop()
        return fake.decoded

    assert run(main()) == []


def test_stop_with_a_timeout_answers_what_is_left_engine_closed():
    async def main():
        fake = Fake(gated=True)
        engine = await started(fake)
        held = asyncio.create_task(engine.embed("text", ["held"]))
        await asyncio.to_thread(fake.entered.wait, 10)
        drained = await engine.stop(timeout=0.1)
        fake.gate.set()
        with pytest.raises(EngineClosed, match="did not finish"):
            await held
        return drained

    assert run(main()) is False


@pytest.mark.parametrize("error", [MemoryError(), OSError(24, "Too many open files")], ids=["MemoryError", "EMFILE"])
def test_a_machine_fault_while_preparing_is_a_prepare_fault_not_an_item_error(error):
    class Failing(Fake):
        def prepare(self, modality, item):
            raise error

    async def main():
        engine = await started(Failing())
        with pytest.raises(PrepareFault) as caught:
            await engine.embed("image", ["fine bytes"])
        await engine.stop()
        return caught.value

    fault = run(main())
    assert fault.error is error and str(fault).startswith("image[0]")


def test_stop_with_no_time_left_but_nothing_in_flight_has_drained():
    async def main():
        engine = await started(Fake())
        await engine.embed("text", ["done"])
        return await engine.stop(timeout=0)

    assert run(main()) is True
