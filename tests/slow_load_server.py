"""A server whose model load runs torch's native code for a minute: ``python -m
tests.slow_load_server PORT WEIGHTS_DIR [launcher]``. For the test that stops a server mid-load."""

from __future__ import annotations

import sys
import time

import torch
import uvicorn

from app.main import create_app
from app.settings import Settings


def slow_loader(settings):
    a = torch.randn(256, 256)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # matrix products: the thread is in native code nearly always
        a = torch.mm(a, a).clamp_(-1, 1)
    raise RuntimeError("the test should have stopped the server long before")


if __name__ == "__main__":
    port, weights = int(sys.argv[1]), sys.argv[2]
    launcher = sys.argv[3:] == ["launcher"]
    app = create_app(Settings(weights_dir=weights, precision="fp32"), loader=slow_loader, launcher=launcher)
    uvicorn.run(app, host="127.0.0.1", port=port)
