"""The running service: loads the model in the background, owns the engine, answers requests.

States: ``loading`` -> ``ready`` (or ``failed``) -> ``stopping`` -> ``stopped``. Only ``ready``
serves. The model loads in a daemon thread so the event loop (and /.well-known/live) answers
from the first moment; a load failure is logged with its traceback and keeps ready at 503.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

import numpy as np

import handspring_models

from .cpu_gate import CpuGate
from .engine import EncodeError, Engine, EngineClosed, ItemError
from .errors import ApiError
from .loading import Loader, exit_cleanly_if_still_loading, start_loading
from .metrics import Metrics
from .schemas import FIELDS, decode_base64, encode_response, parse_vectorize
from .settings import Settings
from .slots import ForwardSlots

log = logging.getLogger("handspring.app")

BIG_BODY = 1 << 20  # parse JSON bodies above this off the event loop


def _consume(task: asyncio.Task) -> None:
    """Retrieve a discarded task's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


class Service:
    def __init__(self, settings: Settings, loader: Loader | None = None, metrics: Metrics | None = None,
                 check: bool | None = None, preload: concurrent.futures.Future | None = None,
                 launcher: bool = False):
        self.settings = settings
        self.loader = loader  # None: handspring_models.load (app.loading.default_loader)
        # The start-up weights check only makes sense for the real loader.
        self.check = (loader is None) if check is None else check
        self.preload = preload  # a load already under way: start_loading()'s future
        self.launcher = launcher  # this process is the server: it may decide how the process exits
        self.metrics = metrics or Metrics()
        self.state = "created"
        self.error: str | None = None
        self.embedder = None
        self.engine: Engine | None = None
        self.load_seconds: float | None = None
        self._load_task: asyncio.Task | None = None
        self.loaded = asyncio.Event()  # set when loading ends, either way (tests wait on it)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Return at once; the model loads (and warms up) in a background thread, unless
        ``preload`` already started it (see ``python -m app``)."""
        if self.preload is None:
            self.preload = start_loading(self.settings, self.loader, check=self.check)
        self.state = "loading"
        self._load_task = asyncio.create_task(self._finish_load(asyncio.wrap_future(self.preload)),
                                              name="handspring-load")

    async def _finish_load(self, done: asyncio.Future) -> None:
        try:
            embedder, seconds = await done
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self.state = "failed"
            self.error = f"model failed to load: {type(e).__name__}: {e}"
            log.error("%s", self.error, exc_info=e)
            self.loaded.set()
            return
        if self.state != "loading":  # shutting down meanwhile
            self.loaded.set()
            return
        s = self.settings
        import torch  # loaded by now

        # Each thread that runs torch sets its own thread count: the forward slots their share of
        # the cores, the decoding threads one each (they run side by side already).
        engine = Engine(embedder, prepare=self._make_prepare(embedder), batch_window_ms=s.batch_window_ms,
                        max_batch=s.max_batch, preprocess_workers=s.preprocess_workers, observer=self.metrics,
                        cpu_gate=CpuGate(enabled=s.take_turns),
                        slots=ForwardSlots(s.threads, s.inference_workers, set_threads=torch.set_num_threads),
                        prepare_thread_init=lambda: torch.set_num_threads(1))
        await engine.start()
        self.embedder, self.engine, self.load_seconds = embedder, engine, seconds
        self.metrics.watch_engine(engine)
        self.metrics.load_seconds.set(seconds)
        self.metrics.ready.set(1)
        self.state = "ready"
        self.loaded.set()
        log.info(
            "loaded %s (model %s, modalities %s, dim %d) precision=%s (requested %s) weights=%s manifest=%s "
            "in %.2fs (load and warm-up); threads=%d inference_workers=%d preprocess_workers=%d batch_window_ms=%g "
            "max_batch=%d take_turns=%s",
            embedder.feature, embedder.model_name, ",".join(embedder.modalities), embedder.dim, embedder.precision,
            embedder.requested_precision, embedder.weights_dir, embedder.manifest_sha256, seconds,
            s.threads, s.inference_workers, s.preprocess_workers, s.batch_window_ms, s.max_batch, s.take_turns,
        )

    @staticmethod
    def _make_prepare(embedder):
        def prepare(modality: str, item):
            if modality != "text" and isinstance(item, str):
                item = decode_base64(item)
            return embedder.prepare(modality, item)

        return prepare

    async def stop(self) -> None:
        """Finish in-flight requests, then stop the engine."""
        previous, self.state = self.state, "stopping"
        self.metrics.ready.set(0)
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()  # the loading thread is a daemon; its result is dropped
            await asyncio.gather(self._load_task, return_exceptions=True)
            if self.launcher:
                exit_cleanly_if_still_loading(self.preload)
        if self.engine is not None:
            await self.engine.stop()
        self.state = "stopped"
        log.info("stopped (was %s)", previous)

    # ------------------------------------------------------------ queries

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def not_ready_message(self) -> str:
        if self.state == "failed":
            return self.error or "model failed to load"
        if self.state in ("stopping", "stopped"):
            return "shutting down"
        return "model is loading"

    def require_ready(self) -> None:
        if not self.ready:
            raise ApiError(503, self.not_ready_message(), headers={"Retry-After": "1"})

    def meta(self) -> dict:
        self.require_ready()
        e, s = self.embedder, self.settings
        normalized = getattr(e, "normalize", True)  # CLIP's vectors are always unit vectors
        return {
            "model": e.model_name,
            "feature": e.feature,
            "features": [e.feature],
            "modalities": list(e.modalities),
            "dim": e.dim,
            "normalized": normalized,
            "output": ("unit vectors (L2-normalized)" if normalized else
                       "the reference model's raw outputs: L2-normalized, then scaled per modality "
                       "(text by its learned scale, audio x20, thermal x10, depth and imu x5), "
                       "audio and video averaged over their clips"),
            "precision": {"requested": e.requested_precision, "resolved": e.precision},
            "weights": {
                "dir": str(e.weights_dir),
                "manifest_sha256": e.manifest_sha256,
                "source": getattr(e, "source", None),
                "license": getattr(e, "license", None),
            },
            "version": handspring_models.__version__,
            "batching": {
                "window_ms": s.batch_window_ms,
                "max_batch": s.max_batch,
                "preprocess_workers": s.preprocess_workers,
                "threads": s.threads,
                "take_turns": s.take_turns,
            },
            "limits": {
                "max_body_bytes": s.max_body_bytes,
                "max_items": s.max_items,
                "max_image_pixels": s.max_image_pixels,
                **({"max_media_seconds": s.max_media_seconds}
                   if {"audio", "video"} & set(e.modalities) else {}),
            },
            "load_seconds": round(self.load_seconds or 0.0, 3),
        }

    # ------------------------------------------------------------ vectorize

    async def vectorize(self, body: bytes) -> bytes:
        """Raw request body -> JSON response body. Raises ApiError for every non-200 answer."""
        self.require_ready()
        if len(body) > BIG_BODY:
            request = await asyncio.to_thread(parse_vectorize, body)
        else:
            request = parse_vectorize(body)
        inputs = request.inputs()
        total = sum(len(items) for items in inputs.values())
        if total > self.settings.max_items:
            counts = ", ".join(f"{FIELDS[m]}: {len(v)}" for m, v in inputs.items() if v)
            raise ApiError(413, f"too many items: {total} ({counts}); the limit is {self.settings.max_items} "
                                "per request (HANDSPRING_MAX_ITEMS)")
        embedder, engine = self.embedder, self.engine
        for modality, items in inputs.items():
            if items:
                try:
                    embedder.require(modality)
                except ValueError as e:
                    raise ApiError(422, f"{FIELDS[modality]}: {e}") from None
        vectors: dict[str, np.ndarray] = {m: np.zeros((0, embedder.dim), np.float32) for m in inputs}
        vectors.update(await self._embed_all(engine, {m: items for m, items in inputs.items() if items}))
        for modality, array in vectors.items():
            if array.shape != (len(inputs[modality]), embedder.dim) or not np.isfinite(array).all():
                log.error("%s vectors of shape %s, finite=%s", modality, array.shape, bool(np.isfinite(array).all()))
                raise ApiError(500, f"internal error: the model produced invalid {modality} vectors")
            self.metrics.items.labels(modality).inc(len(array))
        return encode_response(vectors, embedder.modalities)

    async def _embed_all(self, engine: Engine, wanted: dict[str, list]) -> dict[str, np.ndarray]:
        """Every modality at once; the first failure answers the request at once and cancels the
        rest (their queued items are skipped), so a bad image never waits for the texts' batch."""
        tasks = {m: asyncio.create_task(engine.embed(m, items, label=FIELDS[m])) for m, items in wanted.items()}
        if not tasks:
            return {}
        try:
            await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks.values():
                if not task.done():
                    task.cancel()
                    task.add_done_callback(_consume)
        errors = [t.exception() for t in tasks.values() if t.done() and not t.cancelled()]
        for error in errors:  # field order: texts before images...
            if error is not None:
                raise self._api_error(error)
        return {m: t.result() for m, t in tasks.items()}

    @staticmethod
    def _api_error(error: BaseException) -> BaseException:
        if isinstance(error, ItemError):
            return ApiError(422, str(error))
        if isinstance(error, EngineClosed):
            return ApiError(503, "shutting down", headers={"Retry-After": "1"})
        if isinstance(error, EncodeError):
            return ApiError(500, str(error))  # the engine logged the traceback
        if isinstance(error, ApiError):
            return error
        if isinstance(error, Exception):
            log.error("vectorize failed", exc_info=error)
            return ApiError(500, f"internal error: {type(error).__name__}: {error}")
        return error  # CancelledError and friends: let them through
