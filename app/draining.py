"""uvicorn's server, with SIGTERM turned into a drain (``Service.drain``) before it shuts down.

uvicorn's own SIGTERM handling closes the listening socket at once, waits for open requests
without a deadline, then re-raises the signal, so the process ends by it (status 143). Kubernetes
sends SIGTERM, keeps probing, and kills 30 s later; what it wants is a server that stops taking
work, says so on its readiness probe, answers everything it holds before the kill and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self.app = app
        self._draining = False
        self._drain: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._draining or self.should_exit:
            super().handle_exit(sig, frame)  # Ctrl+C, or a second signal: uvicorn's prompt exit
            return
        self._draining = True
        loop = asyncio.get_running_loop()  # signal handlers run on the main thread, in the loop
        loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        service = getattr(self.app.state, "service", None)
        if service is None:  # not started yet: nothing to drain
            self.should_exit = True
            return
        self._drain = asyncio.ensure_future(service.drain())
        self._drain.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            uvicorn.server.logger.error("drain failed", exc_info=task.exception())
        self.should_exit = True  # uvicorn now closes the port and runs the lifespan's shutdown

    def work_abandoned(self) -> bool:
        service = getattr(self.app.state, "service", None)
        return bool(getattr(service, "work_abandoned", False))
