"""Cross-request batching in front of an embedder's ``prepare``/``encode`` split.

Weaviate sends one object per request with many requests in flight, so batching has to happen
here, across requests:

- ``prepare`` (decoding, resizing, tokenizing) runs in a thread pool, in parallel, never on the
  event loop. An item that fails to prepare fails only its own request, with its index.
- Prepared items wait in one lane per modality. A lane's collector takes the oldest item and
  everything that arrives within ``batch_window_ms`` of it (up to ``max_batch``), then runs one
  ``encode`` for them on a free forward slot (app/slots.py: a few inference threads sharing the
  cores). It waits only while more items of its modality are still being prepared: a lone
  request runs at once (no window added to its latency), on every core when nothing else runs.
  Under load the queue fills while the slots are busy and is shared out over the slots that
  free up. Every item gets its own row. Texts are sorted by length and split where padding
  would more than double the work, since the model pads to the longest text.
- If ``encode`` raises, the items of that batch fail (``EncodeError``) and the lane goes on.
- Work only for requests still waiting: an item reserves its decoded size in the memory budget
  (app/budget.py) before it is decoded, and a request that fails, is cancelled (its client went
  away) or passes its deadline takes its queued and not yet decoded items with it at once. The
  deadline is checked again before decoding and before each forward pass.
- ``stop(timeout)`` refuses new work, lets accepted requests finish for up to ``timeout``, answers
  the rest ``EngineClosed``, then stops the lanes. Every future that is submitted is resolved,
  whatever happens.

The engine knows nothing about HTTP; the service maps its errors to status codes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .budget import MemoryBudget
from .cpu_gate import CpuGate
from .slots import ForwardSlots, Slot

log = logging.getLogger("handspring.engine")

# What a failing ``prepare`` raises for a bad input: the library reports every defect of an input
# as InvalidInputError (a ValueError; so is MissingModalityError). MemoryError and OSError are the
# machine's troubles (PrepareFault); anything else is a bug and becomes an internal error.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (ValueError,)
SERVER_FAULTS: tuple[type[BaseException], ...] = (MemoryError, OSError)

# Texts up to this long are tokenized on the event loop (well under a millisecond); longer ones,
# which could hold the loop (and the readiness probe) for longer, go to the worker threads.
INLINE_TEXT_CHARS = 2000


class EngineError(Exception):
    """Base of the errors the engine raises to callers."""


class ItemError(EngineError):
    """One input could not be prepared: the client's fault. ``str()`` names the item."""

    def __init__(self, label: str, index: int, message: str):
        super().__init__(f"{label}[{index}]: {message}")
        self.label, self.index, self.message = label, index, message


class PrepareFault(EngineError):
    """Preparing one input failed for a reason that is not the input's: the machine ran out of
    memory, file descriptors or disk. The server's fault; ``error`` is what was raised."""

    def __init__(self, label: str, index: int, error: BaseException):
        super().__init__(f"{label}[{index}]: {type(error).__name__}: {error}")
        self.error = error


class EncodeError(EngineError):
    """The model failed on a batch this request was part of (not the client's fault)."""


class EngineClosed(EngineError):
    """The engine is stopping or stopped and takes no new requests."""


class DeadlineExceeded(EngineError):
    """The request's deadline passed before its work was done; what was left of it was dropped."""


class Embedder(Protocol):
    modalities: tuple[str, ...]
    dim: int

    def prepare(self, modality: str, item: Any) -> Any: ...

    def encode(self, modality: str, prepared: Sequence[Any]) -> np.ndarray: ...


class Observer(Protocol):
    def on_batch(self, modality: str, size: int, seconds: float) -> None: ...

    def on_encode_error(self, modality: str, size: int) -> None: ...

    def on_queue_wait(self, modality: str, seconds: float) -> None: ...

    def on_first_forward(self, seconds: float) -> None: ...


@dataclass(eq=False)
class Job:
    """One client request as the engine sees it: when it arrived and by when it must be done
    (``time.monotonic()`` seconds; None: no deadline). Its modalities share one Job."""

    arrived: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    forwarded: bool = False  # some item of it has reached a forward pass

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


@dataclass(eq=False)
class _Item:
    prepared: Any
    future: asyncio.Future
    enqueued: float  # loop time, for the batch window
    job: Job
    nbytes: int = 0  # its share of the memory budget, until given back
    queued: bool = True  # in its lane's pending queue (not yet taken into a batch)


@dataclass(eq=False)
class _Lane:
    modality: str
    pending: collections.deque = field(default_factory=collections.deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    preparing: int = 0  # items of this modality being prepared now: worth waiting for
    batches: set[asyncio.Task] = field(default_factory=set)  # its batches being encoded


def group_by_length(lengths: Sequence[int], max_padding_ratio: float = 2.0, floor: int = 8) -> list[list[int]]:
    """Indices grouped for padded batches: sorted by length, a new group whenever padding every
    member to the longest would cost more than ``max_padding_ratio`` x their real tokens
    (lengths below ``floor`` count as ``floor``: tiny texts are cheap whatever they are padded to)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        n = max(lengths[i], floor)
        # sorted ascending, so n is the longest so far: the padded cost is members x n
        if current and (len(current) + 1) * n > max_padding_ratio * (real + n):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += n
    if current:
        groups.append(current)
    return groups


class Engine:
    def __init__(
        self,
        embedder: Embedder,
        *,
        prepare: Callable[[str, Any], Any] | None = None,
        batch_window_ms: float = 5.0,
        max_batch: int = 32,
        preprocess_workers: int = 2,
        observer: Observer | None = None,
        cpu_gate: CpuGate | None = None,
        slots: ForwardSlots | None = None,
        prepare_thread_init: Callable[[], None] | None = None,
        client_errors: tuple[type[BaseException], ...] = CLIENT_ERRORS,
        budget: MemoryBudget | None = None,
    ):
        """``slots``: where forward passes run; by default one inference thread that leaves
        torch's thread settings alone. ``prepare_thread_init`` runs once in each preprocessing
        thread as it starts. ``budget``: prepared inputs reserve their size
        (``embedder.prepared_nbytes(modality)``) in it before they are decoded."""
        if max_batch < 1 or preprocess_workers < 1 or batch_window_ms < 0:
            raise ValueError("max_batch and preprocess_workers must be >= 1, batch_window_ms >= 0")
        self.embedder = embedder
        self.modalities = tuple(embedder.modalities)
        self.window = batch_window_ms / 1000.0
        self.max_batch = max_batch
        self.preprocess_workers = preprocess_workers
        self._prepare = prepare or embedder.prepare
        self._observer = observer
        self._gate = cpu_gate or CpuGate(enabled=False)
        self._slots = slots or ForwardSlots()
        self._prepare_thread_init = prepare_thread_init
        self._client_errors = client_errors
        self.budget = budget
        sizes = getattr(embedder, "prepared_nbytes", None)
        self._nbytes = {m: (sizes(m) if budget is not None and sizes is not None else 0) for m in self.modalities}
        self._lanes: dict[str, _Lane] = {}
        self._prep_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._accepting = False
        self._stopping = False
        self._active = 0  # embed() calls in progress
        self._idle: asyncio.Event | None = None
        self._outcomes: set[asyncio.Future] = set()  # one per embed() call: failing it ends the call
        self._backlog = 0  # prepared items waiting for the model or in it (not yet answered)
        self._preparing = 0  # items submitted to the prepare pool and not finished

    # ------------------------------------------------------------ state

    @property
    def queue_depth(self) -> int:
        """Prepared items waiting for the model or being encoded (submitted, not yet answered)."""
        return self._backlog

    @property
    def preparing(self) -> int:
        """Items being decoded/preprocessed or waiting for a preprocessing thread."""
        return self._preparing

    @property
    def active_requests(self) -> int:
        return self._active

    @property
    def running(self) -> bool:
        return self._accepting

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._accepting or self._stopping:
            raise RuntimeError("an engine starts once")
        self._prep_pool = concurrent.futures.ThreadPoolExecutor(self.preprocess_workers, thread_name_prefix="handspring-prep",
                                                                initializer=self._prepare_thread_init)
        self._slots.start()
        self._idle = asyncio.Event()
        self._idle.set()
        for modality in self.modalities:
            lane = _Lane(modality)
            lane.task = asyncio.create_task(self._run_lane(lane), name=f"handspring-lane-{modality}")
            self._lanes[modality] = lane
        self._accepting = True

    async def stop(self, timeout: float | None = None) -> bool:
        """Refuse new requests and let the accepted ones finish, for up to ``timeout`` seconds
        (None: as long as they take). Past it, what is left is answered ``EngineClosed`` and its
        work dropped. Then the lanes and threads stop. Returns whether everything finished."""
        if self._idle is None:  # never started
            return True
        self._accepting = False
        for lane in self._lanes.values():
            lane.wakeup.set()  # flush now instead of waiting out a window
        try:
            if not self._idle.is_set():  # (wait_for with a timeout of 0 gives up even on a set event)
                await asyncio.wait_for(self._idle.wait(), timeout)
            drained = True
        except TimeoutError:
            drained = False
            log.warning("%d request(s) still in flight at the stop's deadline: answering them EngineClosed", self._active)
            self._fail_all(EngineClosed("shutting down: this request did not finish before the engine stopped"))
            await self._idle.wait()  # each embed() returns as soon as its outcome fails
        self._stopping = True
        for lane in self._lanes.values():
            lane.wakeup.set()
            if not drained and lane.task is not None:
                lane.task.cancel()  # it may be waiting for a slot that a pass nobody waits for holds
        await asyncio.gather(*(lane.task for lane in self._lanes.values() if lane.task), return_exceptions=True)
        if drained:  # else a pass still running has nobody to answer: not worth waiting for
            await asyncio.gather(*(t for lane in self._lanes.values() for t in lane.batches), return_exceptions=True)
        if self._prep_pool is not None:
            self._prep_pool.shutdown(wait=False, cancel_futures=True)
        self._slots.shutdown()
        return drained

    def _fail_all(self, error: EngineError) -> None:
        for outcome in list(self._outcomes):
            if not outcome.done():
                outcome.set_exception(error)

    # ------------------------------------------------------------ requests

    async def embed(self, modality: str, items: Sequence[Any], label: str | None = None,
                    job: Job | None = None) -> np.ndarray:
        """Raw inputs of one modality -> float32 [len(items), dim], one row per item, in order.

        Raises ``ItemError`` (naming ``label[i]``) for a bad input, ``PrepareFault`` when the
        machine failed preparing one, the embedder's ``MissingModalityError`` for a modality it
        lacks, ``EncodeError`` if the model fails, ``DeadlineExceeded`` past ``job.deadline``,
        ``EngineClosed`` when stopping. However it ends (cancellation included), none of its
        items is decoded or encoded afterwards, but for a decode or pass already running."""
        if not self._accepting:
            raise EngineClosed("the engine is not running (starting up or shutting down)")
        if modality not in self._lanes:
            require = getattr(self.embedder, "require", None)
            if require is not None:
                require(modality)  # raises the library's MissingModalityError with its hint
            raise ValueError(f"this engine does not embed {modality} (it has: {', '.join(self.modalities)})")
        label = label or modality
        job = job or Job()
        self._active += 1
        self._idle.clear()
        try:
            if len(items) == 0:
                return np.zeros((0, self.embedder.dim), dtype=np.float32)
            lane = self._lanes[modality]
            if modality == "text" and all(isinstance(t, str) and len(t) <= INLINE_TEXT_CHARS for t in items):
                waits = [self._submit(lane, p, job).future for p in self._prepare_inline(modality, items, label)]
            else:
                waits = [asyncio.create_task(self._prepare_and_submit(lane, i, item, label, job),
                                             name=f"handspring-{modality}-item")
                         for i, item in enumerate(items)]
            rows = await self._first_failure_or_all(waits, job)
            return np.stack(rows).astype(np.float32, copy=False)
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def _first_failure_or_all(self, waits: list[asyncio.Future], job: Job) -> list[Any]:
        """Every item's row, or the first failure (then the others are cancelled: their queued
        and not yet prepared work is dropped), or ``DeadlineExceeded`` at the job's deadline."""
        loop = asyncio.get_running_loop()
        outcome = loop.create_future()
        left = len(waits)

        def done(wait: asyncio.Future) -> None:
            nonlocal left
            error = None if wait.cancelled() else wait.exception()  # retrieved, so never logged as lost
            if outcome.done() or wait.cancelled():
                return
            if error is not None:
                outcome.set_exception(error)
                return
            left -= 1
            if left == 0:
                outcome.set_result(None)

        for wait in waits:
            wait.add_done_callback(done)
        self._outcomes.add(outcome)
        timeout = None if job.deadline is None else max(0.0, job.deadline - time.monotonic())
        try:
            async with asyncio.timeout(timeout) as scope:
                await outcome
        except TimeoutError:
            if scope.expired():
                raise DeadlineExceeded("the request's deadline passed before it was done") from None
            raise
        finally:
            self._outcomes.discard(outcome)
            for wait in waits:
                if not wait.done():
                    wait.cancel()
        return [wait.result() for wait in waits]

    def _prepare_inline(self, modality: str, items: Sequence[Any], label: str) -> list[Any]:
        """Short texts tokenize in tens of microseconds: cheaper on the event loop than the hop
        to a worker thread and back (measured ~1 ms of a lone text's latency)."""
        results = []
        for index, item in enumerate(items):
            try:
                results.append(self._prepare(modality, item))
            except self._client_errors as e:
                raise ItemError(label, index, str(e) or type(e).__name__) from None
        return results

    async def _prepare_and_submit(self, lane: _Lane, index: int, raw: Any, label: str, job: Job) -> Any:
        """One item's way through: room in the budget, decoding in a worker, its lane, its row."""
        modality = lane.modality
        nbytes = self._nbytes[modality]
        if nbytes:
            await self.budget.reserve(nbytes)
        owned = nbytes  # the reservation is this coroutine's until the lane takes the item
        try:
            if job.expired():
                raise DeadlineExceeded("the request's deadline passed before this item was decoded")
            loop = asyncio.get_running_loop()
            work = self._prep_pool.submit(self._prepare_one, modality, raw, job)
            self._preparing += 1
            lane.preparing += 1
            try:
                prepared = await asyncio.wrap_future(work)
            except asyncio.CancelledError:
                if owned and not work.cancel():  # still decoding: the memory is in use until it ends
                    work.add_done_callback(functools.partial(self._release_from_thread, loop, owned))
                    owned = 0
                raise
            except self._client_errors as e:
                raise ItemError(label, index, str(e) or type(e).__name__) from None
            except SERVER_FAULTS as e:
                raise PrepareFault(label, index, e) from e
            finally:
                self._preparing -= 1
                lane.preparing -= 1
                lane.wakeup.set()  # a collector waiting for this item re-checks
            item = self._submit(lane, prepared, job, owned)
            owned = 0
        finally:
            if owned:
                self.budget.release(owned)
        return await item.future

    def _release_from_thread(self, loop: asyncio.AbstractEventLoop, nbytes: int, _: object) -> None:
        try:
            loop.call_soon_threadsafe(self.budget.release, nbytes)
        except RuntimeError:  # the loop is closed: the server is gone, and its budget with it
            pass

    def _prepare_one(self, modality: str, raw: Any, job: Job) -> Any:
        if job.expired():  # it may have waited in the pool's queue
            raise DeadlineExceeded("the request's deadline passed before this item was decoded")
        if modality == "text":  # tokenizing is cheap: it need not wait for the model's turn
            return self._prepare(modality, raw)
        with self._gate.decoding():
            return self._prepare(modality, raw)

    def _submit(self, lane: _Lane, prepared: Any, job: Job, nbytes: int = 0) -> _Item:
        """Queue a prepared item; from here its lane gives back its ``nbytes`` of the budget."""
        loop = asyncio.get_running_loop()
        item = _Item(prepared, loop.create_future(), loop.time(), job, nbytes)
        if lane.task is None or lane.task.done():  # only after a bug killed the lane: fail, never hang
            self._release(item)
            item.future.set_exception(EngineClosed(f"the {lane.modality} batching lane is not running"))
            return item
        lane.pending.append(item)
        self._backlog += 1
        item.future.add_done_callback(lambda _: self._drop_if_queued(lane, item))
        lane.wakeup.set()
        return item

    def _drop_if_queued(self, lane: _Lane, item: _Item) -> None:
        """An item answered (its request was cancelled, or failed) while still queued: out of
        the queue at once, so neither its place nor its memory waits for its turn."""
        if item.queued:
            item.queued = False
            lane.pending.remove(item)
            self._backlog -= 1
            self._release(item)

    def _release(self, item: _Item) -> None:
        if item.nbytes:
            self.budget.release(item.nbytes)
            item.nbytes = 0

    # ------------------------------------------------------------ lanes

    async def _run_lane(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not lane.pending:
                    if self._stopping:
                        return
                    lane.wakeup.clear()
                    await lane.wakeup.wait()
                # Collect: until max_batch, the window after the oldest item has passed, or nothing
                # more of this modality is on its way.
                deadline = lane.pending[0].enqueued + self.window
                while len(lane.pending) < self.max_batch and self._accepting and lane.preparing > 0:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    lane.wakeup.clear()
                    try:
                        await asyncio.wait_for(lane.wakeup.wait(), remaining)
                    except TimeoutError:
                        break
                slot = await self._slots.acquire()  # items keep arriving (and leaving) while we wait
                try:
                    batch = self._take_batch(lane, slot)
                    if not batch:
                        self._slots.release(slot)
                        continue
                    task = asyncio.create_task(self._run_batch(lane.modality, batch, slot),
                                               name=f"handspring-batch-{lane.modality}")
                except BaseException:
                    self._slots.release(slot)
                    raise
                lane.batches.add(task)
                task.add_done_callback(lane.batches.discard)
        except BaseException as e:  # a bug or cancellation: never leave a request hanging
            if not isinstance(e, asyncio.CancelledError):
                log.exception("batching lane %s crashed", lane.modality)
            raise
        finally:
            while lane.pending:
                item = lane.pending.popleft()
                item.queued = False
                self._backlog -= 1
                self._release(item)
                if not item.future.done():
                    item.future.set_exception(EngineClosed("the engine stopped before this item was embedded"))

    def _take_batch(self, lane: _Lane, slot: Slot) -> list[_Item]:
        """The items the acquired ``slot`` encodes. Waiting items are shared with the slots
        that are free too (a batch each beats one batch on all cores); the pass gets every core
        only when it takes everything and nothing else runs or is on its way. Items whose
        request is past its deadline are answered so and dropped here, before any pass."""
        share = math.ceil(len(lane.pending) / (1 + self._slots.free))
        batch = []
        while lane.pending and len(batch) < min(self.max_batch, share):
            item = lane.pending.popleft()
            item.queued = False
            if item.future.done():  # its request went away a moment ago
                self._backlog -= 1
                self._release(item)
                continue
            if item.job.expired():
                self._backlog -= 1
                self._release(item)
                item.future.set_exception(DeadlineExceeded("the request's deadline passed before this item's turn"))
                continue
            batch.append(item)
        if batch and not lane.pending and self._preparing == 0:
            self._slots.widen(slot)
        return batch

    async def _run_batch(self, modality: str, batch: list[_Item], slot: Slot) -> None:
        try:
            await self._encode_batch(modality, batch, slot)
        finally:  # whatever happened (cancellation included), every item is answered exactly once
            self._slots.release(slot)
            self._backlog -= len(batch)
            for item in batch:
                self._release(item)
                if not item.future.done():
                    item.future.set_exception(EngineClosed("the engine stopped before this item was embedded"))

    async def _encode_batch(self, modality: str, batch: list[_Item], slot: Slot) -> None:
        if modality == "text":
            groups = [[batch[i] for i in g] for g in group_by_length([len(item.prepared) for item in batch])]
        else:
            groups = [batch]
        for group in groups:
            group = self._still_wanted(group)  # requests may have gone, or run out of time, meanwhile
            if not group:
                continue
            self._note_forward(modality, group)
            try:
                out, seconds = await self._slots.run(slot, self._encode, modality, [i.prepared for i in group])
            except Exception as e:
                log.exception("encoding a %s batch of %d failed", modality, len(group))
                self._notify("on_encode_error", modality, len(group))
                error = EncodeError(f"the model failed on a {modality} batch: {type(e).__name__}: {e}")
                for item in group:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            self._notify("on_batch", modality, len(group), seconds)
            for item, row in zip(group, out):
                if not item.future.done():
                    item.future.set_result(row)

    @staticmethod
    def _still_wanted(group: list[_Item]) -> list[_Item]:
        live = []
        for item in group:
            if item.future.done():
                continue
            if item.job.expired():
                item.future.set_exception(DeadlineExceeded("the request's deadline passed before this item's turn"))
                continue
            live.append(item)
        return live

    def _note_forward(self, modality: str, group: list[_Item]) -> None:
        now, loop_now = time.monotonic(), asyncio.get_running_loop().time()
        for item in group:
            self._notify("on_queue_wait", modality, loop_now - item.enqueued)
            if not item.job.forwarded:
                item.job.forwarded = True
                self._notify("on_first_forward", now - item.job.arrived)

    def _encode(self, modality: str, prepared: list[Any]) -> tuple[np.ndarray, float]:
        """On the inference thread: the forward pass and its own duration (not the wait for the thread)."""
        with self._gate.forward_pass():
            started = time.perf_counter()
            out = np.asarray(self.embedder.encode(modality, prepared))
            seconds = time.perf_counter() - started
        if out.ndim != 2 or out.shape[0] != len(prepared):
            raise RuntimeError(f"encode returned shape {out.shape} for {len(prepared)} inputs")
        return out, seconds

    def _notify(self, method: str, *args) -> None:
        if self._observer is None:
            return
        callback = getattr(self._observer, method, None)
        if callback is None:  # an observer may watch only some events
            return
        try:
            callback(*args)
        except Exception:  # metrics must never break serving
            log.exception("batch observer failed")
