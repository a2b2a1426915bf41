"""Where forward passes run: a few inference threads that share the cores, one pass on each.

One pass at a time with every core (torch's intra-op threads) wastes a small machine on small
batches. A batch of a few captions is hundreds of small matrix products, each ending at a
barrier where the cores wait for each other, and a core that the event loop takes for a moment
stalls them all. Two passes side by side, each on its own share of the cores, wait for no one.
Measured on 2 cores (ViT-B/32, bf16, texts of 15 tokens): one pass on 2 threads, 158 texts/s at
batch 2 and 190 at batch 4; two passes on 1 thread each, 154 at batch 1 and 190 at batch 2.

A lone request should still get every core, or its latency doubles. So slot 0 may run a pass
"wide", with all the threads, when nothing else is running or waiting; the other slots wait
for it. Wide passes are only offered when every other slot's share is one thread: each thread
that runs torch with more than one thread keeps its own OpenMP worker threads, and once
libgomp manages more threads than there are CPUs it stops spinning at barriers, which made
every pass about 1.5x slower here. A share of one needs no workers, so slot 0's team is the
only one. So with 2 slots and 4 or more threads, each slot runs its share and none goes wide.

Results do not depend on the thread count: the model's outputs are bit-identical on 1 and 2
threads (checked in tests/test_slots.py).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class Slot:
    index: int
    threads: int  # its share of the cores
    executor: concurrent.futures.ThreadPoolExecutor | None = None
    busy: bool = False
    wide: bool = False  # the pass running now has every thread
    current: int = 0  # the thread count its thread is set to (0: not set yet)


class ForwardSlots:
    """``count`` inference threads sharing ``threads`` torch threads. ``set_threads(n)`` sets
    the calling thread's torch thread count (``torch.set_num_threads``); None leaves torch's
    settings alone."""

    def __init__(self, threads: int = 1, count: int = 1, set_threads: Callable[[int], None] | None = None):
        if threads < 1 or count < 1:
            raise ValueError("threads and count must be >= 1")
        count = min(count, threads)
        share, extra = divmod(threads, count)
        self.threads = threads
        self.slots = [Slot(i, share + (1 if i < extra else 0)) for i in range(count)]
        # See the module docstring: wide passes only where no other slot needs OpenMP workers.
        self.wide_threads = threads if count > 1 and all(s.threads == 1 for s in self.slots[1:]) else None
        self._set_threads = set_threads
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for slot in self.slots:
            slot.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"handspring-infer{slot.index}")

    def shutdown(self) -> None:
        for slot in self.slots:
            if slot.executor is not None:
                slot.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ state

    @property
    def free(self) -> int:
        """Slots a caller could take now."""
        if any(s.wide for s in self.slots):
            return 0
        return sum(not s.busy for s in self.slots)

    # ------------------------------------------------------------ taking turns

    async def acquire(self) -> Slot:
        """The next free slot (slot 0 first); waits, in arrival order, while none is free or a
        wide pass runs."""
        if not self._waiters:
            slot = self._take()
            if slot is not None:
                return slot
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot just as we were cancelled
                self.release(waiter.result())
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def widen(self, slot: Slot) -> bool:
        """Give the acquired ``slot`` every thread until it is released, if nothing else runs or
        waits (and the cores allow it, see the module docstring). Returns whether it did."""
        if (self.wide_threads is None or slot.index != 0 or not slot.busy or self._waiters
                or any(s.busy for s in self.slots[1:])):
            return False
        slot.wide = True
        return True

    def release(self, slot: Slot) -> None:
        slot.busy = slot.wide = False
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.done():  # cancelled
                self._waiters.popleft()
                continue
            taken = self._take()
            if taken is None:
                return
            self._waiters.popleft()
            waiter.set_result(taken)

    def _take(self) -> Slot | None:
        if any(s.wide for s in self.slots):
            return None
        for slot in self.slots:
            if not slot.busy:
                slot.busy = True
                return slot
        return None

    # ------------------------------------------------------------ running

    async def run(self, slot: Slot, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the acquired ``slot``'s thread, with its share of the threads, or
        every thread if it was widened."""
        threads = self.wide_threads if slot.wide else slot.threads
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(slot.executor, self._call, slot, threads, fn, args)

    def _call(self, slot: Slot, threads: int, fn: Callable[..., T], args: tuple) -> T:
        if self._set_threads is not None and slot.current != threads:
            self._set_threads(threads)  # per thread: OpenMP keeps the count for the calling thread
            slot.current = threads
        return fn(*args)
