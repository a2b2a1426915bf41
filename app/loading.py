"""Loading the model in a background thread: no web code here, so a launcher can start the load
before importing the web stack (``python -m app``)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import handspring_models

from .settings import Settings

Loader = Callable[[Settings], Any]


def default_loader(settings: Settings):
    return handspring_models.load(settings.feature, settings.weights_dir, precision=settings.precision,
                                  max_pixels=settings.max_image_pixels, normalize=settings.normalize,
                                  max_seconds=settings.max_media_seconds)


def check_weights(settings: Settings) -> None:
    """Cheap start-up check (config.json readable, right model) so a wrong HANDSPRING_WEIGHTS_DIR
    stops the server at once with the library's message instead of failing in the background."""
    from handspring_models.weights import default_weights_dir, read_config

    model = handspring_models.FEATURES[settings.feature][0]
    folder = settings.weights_dir if settings.weights_dir is not None else default_weights_dir(model)
    config = read_config(Path(folder))
    if config.get("model") != model:
        raise handspring_models.WeightsError(
            f"{Path(folder) / 'config.json'} holds {config.get('model')!r}, but {settings.feature} needs {model!r}")


def start_loading(settings: Settings, loader: Loader | None = None, check: bool = True) -> concurrent.futures.Future:
    """Start loading and warming up the model in a daemon thread; the future gets
    ``(embedder, seconds)`` or the error. Raises at once (WeightsError) if ``check`` finds the
    weights folder unusable. Needs no event loop, so a launcher can call it before the web stack
    is even imported (``python -m app``)."""
    if check:
        check_weights(settings)
    import torch

    torch.set_num_threads(settings.threads)
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_running_or_notify_cancel()
    load = loader or default_loader

    def run() -> None:
        started = time.perf_counter()
        try:
            embedder = load(settings)
            # The first forward pass of each tower is slow (kernel selection): not on a client's request.
            warmup = getattr(embedder, "warmup", None)
            if callable(warmup):
                warmup()
            future.set_result((embedder, time.perf_counter() - started))
        except BaseException as e:  # noqa: BLE001 - reported through the future
            future.set_exception(e)

    threading.Thread(target=run, name="handspring-load", daemon=True).start()
    return future
