"""The cap on requests in flight: past it a request is refused at once, before its body is read.

Text Embeddings Inference does the same with ``--max-concurrent-requests``. Refusing early is
what keeps an overload cheap: a refused request costs no body buffer, no decoding and no queue
place, and its client learns at once, with ``Retry-After``, instead of timing out later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class Overloaded(Exception):
    """The cap is reached; the request was not taken in."""


class Admission:
    def __init__(self, max_in_flight: int):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.empty = asyncio.Event()  # no request in flight (the drain waits for it)
        self.empty.set()

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for the request's whole life; raises ``Overloaded`` if there is none."""
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(f"too many requests in flight ({self.max_in_flight}, HANDSPRING_MAX_CONCURRENT_REQUESTS)")
        self.in_flight += 1
        self.empty.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.empty.set()
