"""Working only for clients that are still there.

Once a request's body is read, the next ASGI message its connection can bring is
``http.disconnect``. The work runs beside a watch for it; if the client goes first, the work is
cancelled (the engine then drops its queued and not yet decoded items) and ``ClientGone`` is
raised, so nothing is computed for an answer nobody will read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientGone(Exception):
    """The client closed its connection before it was answered."""


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def retrieve_outcome(task: asyncio.Task) -> None:
    """Retrieve a discarded task's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


async def while_connected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or ``ClientGone`` (with ``work`` cancelled) if the client leaves first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watch):
            if not pending.done():
                pending.cancel()
                pending.add_done_callback(retrieve_outcome)
    if task.done() and not task.cancelled():
        return task.result()
    raise ClientGone("the client went away before its answer was ready")
