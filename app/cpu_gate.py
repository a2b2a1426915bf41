"""Turn-taking between the forward pass and input decoding on a small machine.

The forward pass splits every matrix product across all cores (torch intra-op threads); a
decoding thread that takes one of those cores mid-product stalls the whole product until it
gives the core back. On 2 cores, measured under Weaviate's load, overlapping them made the model
run about 1.5x slower than alone. So they take turns: any number of decodes run together, the
forward pass runs alone, and a waiting forward pass goes first (new decodes queue behind it).
Decodes that were already waiting when a forward pass ends get in before the next one, so a
steady stream of text batches cannot starve image decoding.

Several forward passes may run at once (app/slots.py): a new decode waits until none runs, and
the decodes already waiting get in as soon as any one of them ends.
"""

from __future__ import annotations

import contextlib
import threading


class CpuGate:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._cond = threading.Condition()
        self._decoders = 0  # decodes running
        self._waiting = 0  # decodes waiting for their turn
        self._tickets = 0  # decodes let in ahead of the next forward pass
        self._model_turns = 0  # forward passes running or waiting

    @contextlib.contextmanager
    def decoding(self):
        if not self.enabled:
            yield
            return
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: self._model_turns == 0 or self._tickets > 0)
            self._waiting -= 1
            if self._tickets > 0:
                self._tickets -= 1
            self._decoders += 1
        try:
            yield
        finally:
            with self._cond:
                self._decoders -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def forward_pass(self):
        if not self.enabled:
            yield
            return
        with self._cond:
            self._model_turns += 1
            self._cond.wait_for(lambda: self._decoders == 0 and self._tickets == 0)
        try:
            yield
        finally:
            with self._cond:
                self._model_turns -= 1
                self._tickets = self._waiting  # everyone waiting now goes before the next pass
                self._cond.notify_all()
