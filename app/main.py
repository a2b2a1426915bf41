"""The Handspring HTTP service: ``uvicorn app.main:app --host 0.0.0.0 --port 8080``, or
``python -m app`` (the same, with the model loading while the web stack is imported).

``create_app(settings)`` builds an app; the module-level ``app`` reads HANDSPRING_* variables
when it starts (its lifespan), so importing this module loads nothing.
"""

from __future__ import annotations

import concurrent.futures
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

import handspring_models

from . import errors
from .loading import Loader
from .logs import configure_logging
from .memory import bound_kernel_caches, limit_malloc_arenas
from .metrics import Metrics, MetricsMiddleware
from .openai_api import router as openai_router
from .routes import router
from .service import Service
from .settings import Settings, SettingsError
from .ui import router as ui_router

log = logging.getLogger("handspring.app")

limit_malloc_arenas()  # at import: before the server starts any thread
bound_kernel_caches()  # and before the model's first forward pass


def create_app(settings: Settings | None = None, loader: Loader | None = None,
               preload: concurrent.futures.Future | None = None, launcher: bool = False) -> FastAPI:
    """``settings``: None reads the environment at start-up. ``loader(settings) -> embedder``
    replaces ``handspring_models.load`` (tests use it for fakes and slow loads). ``preload``: a
    load ``app.loading.start_loading(settings)`` already began (``python -m app`` does).
    ``launcher``: the app is the process's server (uvicorn's ``app.main:app``, ``python -m
    app``), so stopping during the load may end the process (``exit_cleanly_if_still_loading``)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            resolved = settings if settings is not None else Settings.from_env()
        except SettingsError as e:
            configure_logging(logging.INFO)
            log.error("%s", e)
            raise RuntimeError(str(e)) from None
        configure_logging(resolved.log_level_number)
        logging.getLogger("uvicorn.access").disabled = not resolved.access_log
        service = Service(resolved, loader=loader, metrics=metrics, preload=preload, launcher=launcher)
        app.state.service = service
        try:
            await service.start()
        except handspring_models.WeightsError as e:
            log.error("cannot start: %s", e)
            raise RuntimeError(str(e)) from None
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="Handspring",
        summary="Drop-in vectorizer for Weaviate's multi2vec-clip and multi2vec-bind modules, "
                "with OpenAI's embeddings API beside it",
        version=handspring_models.__version__,
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(router)
    app.include_router(openai_router)
    app.include_router(ui_router)
    app.state.metrics = metrics
    return app


app = create_app(launcher=True)
