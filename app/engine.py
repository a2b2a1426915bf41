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
- ``stop()`` refuses new work, lets every accepted request finish, then stops the lanes. Every
  future that is submitted is resolved, whatever happens.

The engine knows nothing about HTTP; the service maps its errors to status codes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .cpu_gate import CpuGate
from .slots import ForwardSlots, Slot

log = logging.getLogger("handspring.engine")

# What a failing ``prepare`` may raise for a bad input (the library's InvalidInputError and
# MissingModalityError are ValueErrors; PIL plugins raise OSError, EOFError or SyntaxError on broken
# files). Anything else is our fault and becomes an internal error.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, EOFError, SyntaxError)

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


class EncodeError(EngineError):
    """The model failed on a batch this request was part of (not the client's fault)."""


class EngineClosed(EngineError):
    """The engine is stopping or stopped and takes no new requests."""


class Embedder(Protocol):
    modalities: tuple[str, ...]
    dim: int

    def prepare(self, modality: str, item: Any) -> Any: ...

    def encode(self, modality: str, prepared: Sequence[Any]) -> np.ndarray: ...


class Observer(Protocol):
    def on_batch(self, modality: str, size: int, seconds: float) -> None: ...

    def on_encode_error(self, modality: str, size: int) -> None: ...


@dataclass(eq=False)
class _Item:
    prepared: Any
    future: asyncio.Future
    enqueued: float


@dataclass(eq=False)
class _Lane:
    modality: str
    pending: collections.deque = field(default_factory=collections.deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    preparing: int = 0  # items of this modality still being prepared: worth waiting for
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
    ):
        """``slots``: where forward passes run; by default one inference thread that leaves
        torch's thread settings alone. ``prepare_thread_init`` runs once in each preprocessing
        thread as it starts."""
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
        self._lanes: dict[str, _Lane] = {}
        self._prep_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._accepting = False
        self._stopping = False
        self._active = 0  # embed() calls in progress
        self._idle: asyncio.Event | None = None
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

    async def stop(self) -> None:
        """Refuse new requests, finish every accepted one, then stop the lanes and threads."""
        if self._idle is None:  # never started
            return
        self._accepting = False
        for lane in self._lanes.values():
            lane.wakeup.set()  # flush now instead of waiting out a window
        await self._idle.wait()
        self._stopping = True
        for lane in self._lanes.values():
            lane.wakeup.set()
        await asyncio.gather(*(lane.task for lane in self._lanes.values() if lane.task), return_exceptions=True)
        await asyncio.gather(*(t for lane in self._lanes.values() for t in lane.batches), return_exceptions=True)
        if self._prep_pool is not None:
            self._prep_pool.shutdown(wait=False, cancel_futures=True)
        self._slots.shutdown()

    # ------------------------------------------------------------ requests

    async def embed(self, modality: str, items: Sequence[Any], label: str | None = None) -> np.ndarray:
        """Raw inputs of one modality -> float32 [len(items), dim], one row per item, in order.

        Raises ``ItemError`` (naming ``label[i]``) for a bad input, the embedder's
        ``MissingModalityError`` for a modality it lacks, ``EncodeError`` if the model fails,
        ``EngineClosed`` when stopping."""
        if not self._accepting:
            raise EngineClosed("the engine is not running (starting up or shutting down)")
        if modality not in self._lanes:
            require = getattr(self.embedder, "require", None)
            if require is not None:
                require(modality)  # raises the library's MissingModalityError with its hint
            raise ValueError(f"this engine does not embed {modality} (it has: {', '.join(self.modalities)})")
        label = label or modality
        self._active += 1
        self._idle.clear()
        try:
            if len(items) == 0:
                return np.zeros((0, self.embedder.dim), dtype=np.float32)
            prepared = await self._prepare_all(modality, items, label)
            futures = [self._submit(self._lanes[modality], p) for p in prepared]
            results = await asyncio.gather(*futures, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r
            return np.stack(results).astype(np.float32, copy=False)
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def _prepare_all(self, modality: str, items: Sequence[Any], label: str) -> list[Any]:
        if modality == "text" and all(isinstance(t, str) and len(t) <= INLINE_TEXT_CHARS for t in items):
            return self._prepare_inline(modality, items, label)
        loop = asyncio.get_running_loop()
        lane = self._lanes[modality]
        self._preparing += len(items)
        lane.preparing += len(items)
        futures = [loop.run_in_executor(self._prep_pool, self._prepare_one, modality, item) for item in items]
        try:
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            self._preparing -= len(items)
            lane.preparing -= len(items)
            lane.wakeup.set()  # a collector waiting for these re-checks
        for index, r in enumerate(results):
            if isinstance(r, self._client_errors):
                raise ItemError(label, index, str(r) or type(r).__name__) from None
            if isinstance(r, BaseException):
                raise r
        return results

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

    def _prepare_one(self, modality: str, item: Any) -> Any:
        if modality == "text":  # tokenizing is cheap: it need not wait for the model's turn
            return self._prepare(modality, item)
        with self._gate.decoding():
            return self._prepare(modality, item)

    def _submit(self, lane: _Lane, prepared: Any) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        item = _Item(prepared, loop.create_future(), loop.time())
        if lane.task is None or lane.task.done():  # only after a bug killed the lane: fail, never hang
            item.future.set_exception(EngineClosed(f"the {lane.modality} batching lane is not running"))
            return item.future
        lane.pending.append(item)
        self._backlog += 1
        lane.wakeup.set()
        return item.future

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
                slot = await self._slots.acquire()  # items keep arriving while we wait
                try:
                    batch = self._take_batch(lane, slot)
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
                self._backlog -= 1
                if not item.future.done():
                    item.future.set_exception(EngineClosed("the engine stopped before this item was embedded"))

    def _take_batch(self, lane: _Lane, slot: Slot) -> list[_Item]:
        """The items the acquired ``slot`` encodes. Waiting items are shared with the slots
        that are free too (a batch each beats one batch on all cores); the pass gets every core
        only when it takes everything and nothing else runs or is on its way."""
        share = math.ceil(len(lane.pending) / (1 + self._slots.free))
        batch = [lane.pending.popleft() for _ in range(min(self.max_batch, share))]
        if not lane.pending and self._preparing == 0:
            self._slots.widen(slot)
        return batch

    async def _run_batch(self, modality: str, batch: list[_Item], slot: Slot) -> None:
        try:
            await self._encode_batch(modality, batch, slot)
        finally:  # whatever happened (cancellation included), every item is answered exactly once
            self._slots.release(slot)
            self._backlog -= len(batch)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(EngineClosed("the engine stopped before this item was embedded"))

    async def _encode_batch(self, modality: str, batch: list[_Item], slot: Slot) -> None:
        live = [item for item in batch if not item.future.done()]  # skip requests that went away
        if not live:
            return
        if modality == "text":
            groups = [[live[i] for i in g] for g in group_by_length([len(item.prepared) for item in live])]
        else:
            groups = [live]
        for group in groups:
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
        try:
            getattr(self._observer, method)(*args)
        except Exception:  # metrics must never break serving
            log.exception("batch observer failed")
