"""``python -m tests.gated_server``: ``python -m app`` whose model holds every forward pass until
the process gets SIGUSR1, so a test can pile work up in a real server and look at it (its memory,
its metrics) before letting it through. Settings come from HANDSPRING_* as usual."""

from __future__ import annotations

import signal
import sys
import threading

import app.loading
from app.__main__ import main

gate = threading.Event()
signal.signal(signal.SIGUSR1, lambda *_: gate.set())


class Gated:
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, modality, prepared):
        gate.wait()
        return self.inner.encode(modality, prepared)


def gated_loader(settings):
    return Gated(app.loading.default_loader(settings))


if __name__ == "__main__":
    real_start = app.loading.start_loading
    app.loading.start_loading = lambda settings, loader=None, check=True: real_start(settings, gated_loader, check)
    sys.exit(main(sys.argv[1:]))
