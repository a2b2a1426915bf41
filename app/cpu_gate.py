"""Turn-taking between the forward pass and input decoding on a small machine.

The forward pass splits every matrix product across all cores (torch intra-op threads); a
decoding thread that takes one of those cores mid-product stalls the whole product until it
gives the core back. On 2 cores, measured under Weaviate's load, overlapping them made the model
run about twice as slow as alone. So they take turns: any number of decodes may run together,
the forward pass runs alone, and a waiting forward pass goes first (decodes queue behind it).
"""

from __future__ import annotations

import contextlib
import threading


class CpuGate:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._cond = threading.Condition()
        self._decoders = 0
        self._model_turns = 0  # forward passes running or waiting

    @contextlib.contextmanager
    def decoding(self):
        if not self.enabled:
            yield
            return
        with self._cond:
            self._cond.wait_for(lambda: self._model_turns == 0)
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
            self._cond.wait_for(lambda: self._decoders == 0)
        try:
            yield
        finally:
            with self._cond:
                self._model_turns -= 1
                self._cond.notify_all()
