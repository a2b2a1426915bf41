"""Loading the model in a background thread: no web code here, so a launcher can start the load
before importing the web stack (``python -m app``)."""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import handspring_models

from .memory import loading_allocations
from .settings import Settings

Loader = Callable[[Settings], Any]


def default_loader(settings: Settings):
    # The service owns its process: a pixel limit raised past Pillow's own bomb guard raises the
    # guard too (the library leaves Pillow's setting alone, and Pillow refuses past twice it).
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and settings.max_image_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    options = {"max_seconds": settings.max_media_seconds} if {"audio", "video"} & set(
        handspring_models.find_feature(settings.feature)[2]) else {}
    return handspring_models.load(settings.feature, settings.weights_folder, precision=settings.precision,
                                  max_pixels=settings.max_image_pixels, normalize=settings.normalize,
                                  backend=settings.backend, **options)


def check_weights(settings: Settings) -> None:
    """Cheap start-up check (config.json readable, right model) so a wrong HANDSPRING_WEIGHTS_DIR
    stops the server at once with the library's message instead of failing in the background."""
    from handspring_models.weights import read_config

    folder = settings.weights_folder
    config = read_config(folder)
    if config.get("model") != settings.model:
        raise handspring_models.WeightsError(
            f"{folder / 'config.json'} holds {config.get('model')!r}, but {settings.feature} needs {settings.model!r}")


def start_loading(settings: Settings, loader: Loader | None = None, check: bool = True) -> concurrent.futures.Future:
    """Start loading and warming up the model in a daemon thread; the future gets
    ``(embedder, seconds)`` or the error. Raises at once (WeightsError) if ``check`` finds the
    weights folder unusable. Needs no event loop, so a launcher can call it before the web stack
    is even imported (``python -m app``)."""
    if check:
        check_weights(settings)
    import torch

    torch.set_num_threads(settings.threads)
    future = LoadFuture()
    future.set_running_or_notify_cancel()
    load = loader or default_loader

    def run() -> None:
        started = time.perf_counter()
        try:
            with loading_allocations():
                embedder = load(settings)
                # The first forward pass of each tower is slow (kernel selection): not on a client's request.
                warmup = getattr(embedder, "warmup", None)
                if callable(warmup):
                    warmup()
            future.set_result((embedder, time.perf_counter() - started))
        except BaseException as e:  # noqa: BLE001 - reported through the future
            future.set_exception(e)

    future.thread = threading.Thread(target=run, name="handspring-load", daemon=True)
    future.thread.start()
    return future


class LoadFuture(concurrent.futures.Future):
    """``start_loading``'s future, with the thread doing the load."""

    thread: threading.Thread | None = None


def exit_cleanly_if_still_loading(future: concurrent.futures.Future) -> None:
    """For a server that stops while its model is still loading: if the load thread is still
    running when the interpreter exits, end the process there, after flushing the logs, instead
    of finalizing. Finalizing would abort it (SIGABRT, exit 134, "terminate called without an
    active exception"): CPython ends daemon threads at exit with pthread_exit, whose forced
    unwind cannot pass through torch's native frames. The status is 0, what uvicorn returns after
    a Ctrl+C shutdown. Only for launchers: it decides the exit status.

    (uvicorn re-raises SIGTERM once it has shut down, so a SIGTERM'd server ends by the signal
    before the interpreter finalizes and never gets here.)"""
    thread = getattr(future, "thread", None)
    if thread is None or not thread.is_alive():
        return

    def exit_now() -> None:
        if not thread.is_alive():
            return
        logging.getLogger("handspring.app").info("exiting while the model is still loading")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    atexit.register(exit_now)
