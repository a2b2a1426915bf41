"""The running service: loads the model in the background, owns the engine, answers requests.

States: ``loading`` -> ``ready`` (or ``failed``) -> ``stopping`` -> ``stopped``. Only ``ready``
serves. The model loads in a daemon thread so the event loop (and /.well-known/live) answers
from the first moment; a load failure is logged with its traceback and keeps ready at 503.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

import handspring_models

from .admission import Admission, Overloaded
from .budget import MemoryBudget
from .cpu_gate import CpuGate
from .disconnect import retrieve_outcome
from .engine import DeadlineExceeded, EncodeError, Engine, EngineClosed, ItemError, Job, PrepareFault
from .errors import ApiError
from .loading import Loader, exit_cleanly_if_still_loading, start_loading
from .metrics import Metrics
from .schemas import FIELDS, decode_base64, encode_response, parse_vectorize
from .settings import MB, Settings
from .slots import ForwardSlots

log = logging.getLogger("handspring.app")
T = TypeVar("T")

BIG_BODY = 1 << 20  # parse JSON bodies above this off the event loop


MODALITY_OF_FIELD = {field: modality for modality, field in FIELDS.items()}


class InputNames:
    """How error messages name a request's inputs; by default Weaviate's fields (``images[2]``).
    ``param``: the request field OpenAI's error shape names (None on Weaviate's routes)."""

    param: str | None = None

    def field(self, modality: str) -> str:
        return FIELDS[modality]

    def item(self, modality: str, index: int) -> str:
        return f"{FIELDS[modality]}[{index}]"


WEAVIATE_NAMES = InputNames()


@dataclass(frozen=True)
class MediaItem:
    """An audio or video with this request's own limit on its length (see ``_limit_media``)."""

    data: str
    max_seconds: float


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
        self.loaded_at: int | None = None
        self._load_task: asyncio.Task | None = None
        self.loaded = asyncio.Event()  # set when loading ends, either way (tests wait on it)
        self.admission = Admission(settings.max_concurrent_requests)
        self.budget = MemoryBudget(settings.max_prepared_mb * MB)
        self.metrics.watch_limits(self.admission, self.budget)
        # Big bodies are parsed off the event loop, one at a time: the JSON decoder holds the GIL
        # for the whole of a body, so parses side by side would only queue up for it, each one
        # holding up the event loop (and the liveness probe) in turn.
        self._parser = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="handspring-parse")
        self._drain: asyncio.Task | None = None
        self.drain_expired = False  # the drain deadline passed with requests still in flight
        self.drain_began: float | None = None  # time.monotonic() when the drain began
        self.work_abandoned = False  # and work of theirs was dropped unfinished

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
                        cpu_gate=CpuGate(enabled=s.take_turns), budget=self.budget,
                        slots=ForwardSlots(s.threads, s.inference_workers, set_threads=torch.set_num_threads),
                        prepare_thread_init=lambda: torch.set_num_threads(1))
        await engine.start()
        self.embedder, self.engine, self.load_seconds = embedder, engine, seconds
        self.loaded_at = int(time.time())  # OpenAI's model "created"
        self.metrics.watch_engine(engine)
        self.metrics.load_seconds.set(seconds)
        self.metrics.ready.set(1)
        self.state = "ready"
        self.loaded.set()
        log.info(
            "loaded %s (model %s, modalities %s, dim %d) precision=%s (requested %s) backend=%s linear_kernels=%s panel_kernel_build=%s weights=%s manifest=%s "
            "in %.2fs (load and warm-up); threads=%d inference_workers=%d preprocess_workers=%d batch_window_ms=%g "
            "max_batch=%d take_turns=%s; limits: max_concurrent_requests=%d max_prepared_mb=%d "
            "request_timeout_s=%g drain_timeout_s=%g",
            embedder.feature, embedder.model_name, ",".join(embedder.modalities), embedder.dim, embedder.precision,
            embedder.requested_precision, getattr(embedder, "backend", "torch"), getattr(embedder, "linear_kernels", None),
            getattr(embedder, "panel_kernel_build", None), embedder.weights_dir, embedder.manifest_sha256, seconds,
            s.threads, s.inference_workers, s.preprocess_workers, s.batch_window_ms, s.max_batch, s.take_turns,
            s.max_concurrent_requests, s.max_prepared_mb, s.request_timeout_s, s.drain_timeout_s,
        )

    @staticmethod
    def _make_prepare(embedder):
        def prepare(modality: str, item):
            if isinstance(item, MediaItem):
                return embedder.prepare(modality, decode_base64(item.data), max_seconds=item.max_seconds)
            if modality != "text" and isinstance(item, str):
                item = decode_base64(item)
            return embedder.prepare(modality, item)

        return prepare

    async def drain(self) -> None:
        """Stop taking requests (ready and new requests answer 503), give those in flight up to
        HANDSPRING_DRAIN_TIMEOUT_S to finish, answer the rest 503, stop the engine. Once."""
        if self._drain is None:
            self._drain = asyncio.create_task(self._stop_once(), name="handspring-drain")
        await asyncio.shield(self._drain)

    async def _stop_once(self) -> None:
        previous, self.state = self.state, "stopping"
        self.drain_began = time.monotonic()
        self.metrics.ready.set(0)
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()  # the loading thread is a daemon; its result is dropped
            await asyncio.gather(self._load_task, return_exceptions=True)
            if self.launcher:
                exit_cleanly_if_still_loading(self.preload)
        if self.engine is not None:
            log.info("draining: %d request(s) in flight, %gs to finish", self.admission.in_flight,
                     self.settings.drain_timeout_s)
            try:  # every request taken in before the drain, wherever it is (reading, decoding, in the model)
                await asyncio.wait_for(self.admission.empty.wait(), self.settings.drain_timeout_s)
                finished = True
            except TimeoutError:
                finished = False
                self.drain_expired = True
            # Past the deadline the engine answers what it holds 503 at once, and takes nothing more.
            self.work_abandoned = not await self.engine.stop(None if finished else 0)
        self._parser.shutdown(wait=False, cancel_futures=True)
        self.state = "stopped"
        log.info("stopped (was %s)", previous)

    async def stop(self) -> None:
        """The drain, if a signal has not begun it already."""
        await self.drain()

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

    def require_ready(self, arrived: float | None = None) -> None:
        """503 unless the model serves. ``arrived``: when a request already taken in arrived; one
        taken in before a drain began goes on, since the drain owes it its time to finish."""
        if self.ready:
            return
        if (arrived is not None and self.state == "stopping" and self.drain_began is not None
                and arrived < self.drain_began):
            return
        raise ApiError(503, self.not_ready_message(), headers={"Retry-After": "1"})

    def meta(self) -> dict:
        self.require_ready()
        e, s = self.embedder, self.settings
        spec = getattr(e, "spec", None)
        normalized = getattr(e, "normalize", True)
        describe = getattr(e, "describe_output", None)
        extra = getattr(e, "meta_extra", None)  # what a family has to say of itself (SigLIP's loss scalars)
        return {
            "model": e.model_name,
            "aliases": list(getattr(e, "aliases", ())),
            "feature": e.feature,
            "features": [e.feature],
            "modalities": list(e.modalities),
            "dim": e.dim,
            "normalized": normalized,
            "output": describe() if callable(describe) else
            ("unit vectors (L2-normalized)" if normalized else "the model's raw outputs (not normalized)"),
            **({"weaviate_default_normalized": spec.normalize} if spec is not None else {}),
            **({"model_extra": extra()} if callable(extra) else {}),
            "precision": {"requested": e.requested_precision, "resolved": e.precision,
                          "runs": getattr(e, "runs_precision", e.precision)},
            "backend": getattr(e, "backend", "torch"),
            # how many linear layers each kernel runs: the panel kernel, oneDNN or plain PyTorch
            "linear_kernels": getattr(e, "linear_kernels", None),
            "panel_kernel_build": getattr(e, "panel_kernel_build", None),  # its AVX2 or AVX-512 build
            "weights": {
                "dir": str(e.weights_dir),
                "manifest_sha256": e.manifest_sha256,
                "source": getattr(e, "source", None),
                "license": getattr(e, "license", None),
                "random": is_random_demo(getattr(e, "source", None)),
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
                **({"max_videos_per_request": s.max_videos_per_request} if "video" in e.modalities else {}),
                **({"max_audio_seconds_per_request": s.max_audio_seconds_per_request}
                   if "audio" in e.modalities else {}),
                "max_concurrent_requests": s.max_concurrent_requests,
                "max_prepared_mb": s.max_prepared_mb,
                "request_timeout_s": s.request_timeout_s,
                "drain_timeout_s": s.drain_timeout_s,
            },
            "load_seconds": round(self.load_seconds or 0.0, 3),
        }

    # ------------------------------------------------------------ vectorize

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """A place among the requests in flight for the whole request, or ApiError 429 at once."""
        try:
            with self.admission.admit():
                yield
        except Overloaded as e:
            self.metrics.rejected.labels("concurrency").inc()
            raise ApiError(429, f"{e}: retry later", headers={"Retry-After": "1"}) from None

    async def vectorize(self, body: bytes, arrived: float | None = None) -> bytes:
        """Raw request body -> JSON response body. Raises ApiError for every non-200 answer.
        ``arrived``: ``time.monotonic()`` when the request came in; its deadline counts from it."""
        self.require_ready(arrived)
        job = self.job(arrived)
        request = await self.parse(parse_vectorize, body)
        vectors = await self.embed_inputs(request.inputs(), job)
        return encode_response(vectors, self.embedder.modalities)

    def job(self, arrived: float | None = None) -> Job:
        """A request's job, its deadline HANDSPRING_REQUEST_TIMEOUT_S after ``arrived``."""
        arrived = time.monotonic() if arrived is None else arrived
        return Job(arrived=arrived, deadline=arrived + self.settings.request_timeout_s)

    async def parse(self, parser: Callable[[bytes], T], body: bytes) -> T:
        """``parser(body)``, off the event loop for big bodies."""
        if len(body) > BIG_BODY:
            return await asyncio.wrap_future(self._parser.submit(parser, body))
        return parser(body)

    async def embed_inputs(self, inputs: dict[str, list], job: Job, names: InputNames = WEAVIATE_NAMES,
                           ) -> dict[str, np.ndarray]:
        """modality -> its raw items (texts, base64 files) -> modality -> float32 [n, dim]: the
        limits, batching and checks every API shares. ``names`` names the inputs in errors."""
        total = sum(len(items) for items in inputs.values())
        if total > self.settings.max_items:
            counts = ", ".join(f"{FIELDS[m]}: {len(v)}" for m, v in inputs.items() if v)
            raise ApiError(413, f"too many items: {total} ({counts}); the limit is {self.settings.max_items} "
                                "per request (HANDSPRING_MAX_ITEMS)", param=names.param)
        self._check_media(inputs, names)
        embedder, engine = self.embedder, self.engine
        for modality, items in inputs.items():
            if items:
                try:
                    embedder.require(modality)
                except ValueError as e:
                    raise ApiError(422, f"{names.field(modality)}: {e}", param=names.param) from None
        vectors: dict[str, np.ndarray] = {m: np.zeros((0, embedder.dim), np.float32) for m in inputs}
        wanted = {m: self._limit_media(m, items) for m, items in inputs.items() if items}
        vectors.update(await self._embed_all(engine, wanted, job, names))
        for modality, array in vectors.items():
            if array.shape != (len(inputs[modality]), embedder.dim) or not np.isfinite(array).all():
                log.error("%s vectors of shape %s, finite=%s", modality, array.shape, bool(np.isfinite(array).all()))
                raise ApiError(500, f"internal error: the model produced invalid {modality} vectors")
            self.metrics.items.labels(modality).inc(len(array))
        return vectors

    def _check_media(self, inputs: dict[str, list], names: InputNames) -> None:
        videos = len(inputs.get("video") or ())
        if videos > self.settings.max_videos_per_request:
            raise ApiError(413, f"too many videos: {videos}; the limit is {self.settings.max_videos_per_request} "
                                "per request (HANDSPRING_MAX_VIDEOS_PER_REQUEST)", param=names.param)

    def _limit_media(self, modality: str, items: list) -> list:
        """A request's audio files share HANDSPRING_MAX_AUDIO_SECONDS_PER_REQUEST: each of n may
        be up to 1/n of it (and HANDSPRING_MAX_MEDIA_SECONDS), checked while it is decoded."""
        share = self.settings.max_audio_seconds_per_request / max(1, len(items))
        if modality != "audio" or share >= self.settings.max_media_seconds:
            return items
        return [MediaItem(item, share) for item in items]

    async def _embed_all(self, engine: Engine, wanted: dict[str, list], job: Job,
                         names: InputNames) -> dict[str, np.ndarray]:
        """Every modality at once; the first failure answers the request at once and cancels the
        rest (their queued items are skipped), so a bad image never waits for the texts' batch."""
        tasks = {m: asyncio.create_task(engine.embed(m, items, label=FIELDS[m], job=job)) for m, items in wanted.items()}
        if not tasks:
            return {}
        try:
            await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks.values():
                if not task.done():
                    task.cancel()
                    task.add_done_callback(retrieve_outcome)
        errors = [t.exception() for t in tasks.values() if t.done() and not t.cancelled()]
        for error in errors:  # field order: texts before images...
            if error is not None:
                raise self._api_error(error, names)
        return {m: t.result() for m, t in tasks.items()}

    def _api_error(self, error: BaseException, names: InputNames) -> BaseException:
        if isinstance(error, ItemError):
            return ApiError(422, self._explain_item_error(error, names), param=names.param)
        if isinstance(error, EngineClosed):
            message = "shutting down"
            if self.drain_expired:
                message += (f": not finished within the drain deadline of {self.settings.drain_timeout_s:g}s "
                            "(HANDSPRING_DRAIN_TIMEOUT_S)")
            return ApiError(503, message, headers={"Retry-After": "1"})
        if isinstance(error, DeadlineExceeded):
            self.metrics.timed_out.inc()
            return ApiError(503, f"not done within {self.settings.request_timeout_s:g}s (HANDSPRING_REQUEST_TIMEOUT_S): "
                                 "the server is overloaded; its work was dropped, retry later",
                            headers={"Retry-After": "5"})
        if isinstance(error, PrepareFault):
            log.error("preparing an input failed: %s", error, exc_info=error.error)
            return ApiError(503 if _is_resource_exhaustion(error.error) else 500,
                            f"server error while preparing {error}", headers={"Retry-After": "5"})
        if isinstance(error, EncodeError):
            return ApiError(500, str(error))  # the engine logged the traceback
        if isinstance(error, ApiError):
            return error
        if isinstance(error, Exception):
            log.error("vectorize failed", exc_info=error)
            return ApiError(500, f"internal error: {type(error).__name__}: {error}")
        return error  # CancelledError and friends: let them through

    def _explain_item_error(self, error: ItemError, names: InputNames) -> str:
        described = f"{names.item(MODALITY_OF_FIELD[error.label], error.index)}: {error.message}"
        if error.label == FIELDS["audio"] and "longer than the limit" in error.message:
            return (f"{described} (a request's audio may last {self.settings.max_audio_seconds_per_request:g}s in all, "
                    "HANDSPRING_MAX_AUDIO_SECONDS_PER_REQUEST, shared out evenly over its files; "
                    f"each file at most {self.settings.max_media_seconds:g}s, HANDSPRING_MAX_MEDIA_SECONDS)")
        return described


def is_random_demo(source: str | None) -> bool:
    """Random demo weights (``python -m handspring_models.weights random``, or ``make run`` offline)
    say so in their source: ``random (seed N): NOT a trained model...``."""
    return isinstance(source, str) and source.startswith("random")


def _is_resource_exhaustion(error: BaseException) -> bool:
    """Out of memory, file descriptors or disk: may pass, so worth a retry (503, not 500)."""
    return isinstance(error, MemoryError) or (
        isinstance(error, OSError) and error.errno in (errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ENOSPC))
