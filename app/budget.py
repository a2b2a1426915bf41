"""A memory budget for decoded inputs: bytes are reserved before an input is decoded and given
back once its forward pass is done (or it is dropped).

A prepared ImageBind video is 18 MB of float32 and its request body a few hundred KB, so without
a bound a burst of small requests decodes gigabytes before the model has looked at any of it.
Reserving first makes an input wait, still encoded, until there is room.

Waiters are served first come, first served: a large input at the head is not overtaken by a
stream of small ones. An input larger than the whole budget is let in when nothing else holds
any of it, so a small budget slows such inputs down instead of refusing them forever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass


@dataclass(eq=False)
class _Waiter:
    nbytes: int
    future: asyncio.Future


class MemoryBudget:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("a memory budget needs at least one byte")
        self.capacity = capacity
        self.used = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()

    @property
    def waiting(self) -> int:
        """Reservations queued for room."""
        return len(self._waiters)

    def _fits(self, nbytes: int) -> bool:
        return self.used == 0 or self.used + nbytes <= self.capacity

    async def reserve(self, nbytes: int) -> None:
        """Wait, in arrival order, until ``nbytes`` fit; cancelling the wait reserves nothing."""
        if nbytes <= 0:
            return
        if not self._waiters and self._fits(nbytes):
            self.used += nbytes
            return
        waiter = _Waiter(nbytes, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():  # granted as we were cancelled
                self.release(nbytes)
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            self._grant()  # a cancelled head may have been holding back the ones behind it

    def release(self, nbytes: int) -> None:
        if nbytes <= 0:
            return
        self.used -= nbytes
        if self.used < 0:
            raise RuntimeError(f"memory budget released {-self.used} bytes more than it reserved")
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():  # cancelled: its reserve() removes it
                self._waiters.popleft()
                continue
            if not self._fits(head.nbytes):
                return
            self._waiters.popleft()
            self.used += head.nbytes
            head.future.set_result(None)
