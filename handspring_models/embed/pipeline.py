"""Decode in parallel, encode in full batches, write as it goes: the bulk run's engine.

Threads:
- a reading thread enumerates items (those already written were filtered out) and submits each
  to the decoding pool once a slot of the in-flight window is free (``window``: items decoded, waiting
  or in a batch; it bounds memory whatever the collection's size);
- ``workers`` decoding threads read each input and run ``embedder.prepare`` (native decoding
  releases the GIL), one torch thread each;
- the caller's thread gathers prepared inputs per modality and runs ``embedder.encode`` on full
  batches with ``threads`` torch threads, then hands the rows to the writer.

A bad input (``ValueError`` from ``prepare``: ``InvalidInputError``, a modality the feature
lacks; a file that vanished or cannot be read or decoded as UTF-8) becomes an error row and
the run goes on. Faults of the machine (``MemoryError``, other ``OSError``) stop the run: it
resumes where it stopped. Any other exception is a bug of ours; it is logged with its traceback,
recorded as an error row, and the run goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .dataset import Rows
from .sources import Item

log = logging.getLogger("handspring_models.embed")

# Reading errors that are the input's fault: the file is gone, unreadable or not UTF-8 text.
INPUT_READ_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, UnicodeDecodeError)


@dataclass
class Prepared:
    item: Item
    tensor: object = None
    error: str | None = None


def prepare_one(embedder, item: Item) -> Prepared:
    try:
        raw = item.read()
    except INPUT_READ_ERRORS as e:
        return Prepared(item, error=f"cannot read: {e.strerror if isinstance(e, OSError) and e.strerror else e}")
    try:
        return Prepared(item, embedder.prepare(item.modality, raw))
    except ValueError as e:  # InvalidInputError, MissingModalityError: the input's fault
        return Prepared(item, error=str(e) or type(e).__name__)
    except (MemoryError, OSError):
        raise  # the machine's fault: stop, the run resumes later
    except Exception as e:  # a bug of ours: keep the run going, but say so loudly
        log.exception("unexpected error preparing %s %r", item.modality, item.id)
        return Prepared(item, error=f"internal error ({type(e).__name__}): {e}")


class Pipeline:
    """``run(items)`` embeds ``items`` and hands the rows to ``sink(rows)`` (from the calling
    thread); ``on_rows(n_rows, n_errors)`` reports progress."""

    def __init__(self, embedder, sink: Callable[[Rows], None], batch_size: int = 32, workers: int = 2,
                 threads: int | None = None, on_rows: Callable[[int, int], None] | None = None):
        self.embedder = embedder
        self.sink = sink
        self.batch_size = batch_size
        self.workers = workers
        self.threads = threads or torch.get_num_threads()
        self.on_rows = on_rows or (lambda n, e: None)
        # Two batches gathering while one runs, plus what the decoders hold.
        self.window = 2 * batch_size + 2 * workers
        self._slots = threading.BoundedSemaphore(self.window)
        # Holds at most the window's futures (the semaphore bounds them) and the end mark.
        self._ready: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self.items_done = 0
        self.errors = 0

    def run(self, items: Iterable[Item]) -> None:
        """The forward passes run in the calling thread: it is the one whose OpenMP team torch
        already has (loading the model made it), and a second team in another thread would put
        more spinning threads than cores in libgomp's hands, which then stops spinning at
        barriers (about 1.5x slower passes, see app/slots.py)."""
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="handspring-decode",
                                  initializer=torch.set_num_threads, initargs=(1,))
        producer = threading.Thread(target=self._produce, args=(items, pool), name="handspring-read", daemon=True)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        producer.start()
        try:
            self._encode_loop()
        except BaseException:
            self._stop.set()  # Ctrl-C or a failure: the producer stops submitting
            raise
        finally:
            producer.join()
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(previous)
        if self._failure is not None:  # the producer's (enumerating or reading a shard)
            raise self._failure

    def _produce(self, items: Iterable[Item], pool: ThreadPoolExecutor) -> None:
        try:
            for item in items:
                while not self._slots.acquire(timeout=0.5):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                pool.submit(prepare_one, self.embedder, item).add_done_callback(self._ready.put)
            pool.shutdown(wait=True)  # every submitted item decoded and queued for the encoder
        except BaseException as e:
            self._failure = e
        finally:
            self._ready.put(None)

    # ------------------------------------------------------------ the calling thread

    def _encode_loop(self) -> None:
        buffers: dict[str, list[Prepared]] = {}
        while True:
            future = self._ready.get()
            if future is None:
                break
            if future.cancelled():
                continue
            prepared = future.result()  # MemoryError/OSError from a decoder: stop
            if prepared.error is not None:
                self._emit_errors([prepared])
                continue
            batch = buffers.setdefault(prepared.item.modality, [])
            batch.append(prepared)
            if len(batch) >= self.batch_size:
                self._encode(buffers.pop(prepared.item.modality))
            elif sum(map(len, buffers.values())) >= self.window - self.workers:
                # Partial batches of several modalities fill the window: run the largest.
                self._encode(buffers.pop(max(buffers, key=lambda m: len(buffers[m]))))
        if self._failure is None:
            for modality in list(buffers):
                self._encode(buffers.pop(modality))

    def _encode(self, batch: list[Prepared]) -> None:
        modality = batch[0].item.modality
        vectors = self.embedder.encode(modality, [p.tensor for p in batch])
        self.sink(Rows([p.item.id for p in batch], [modality] * len(batch), np.asarray(vectors, np.float32),
                       [None] * len(batch)))
        self._done(len(batch), 0)

    def _emit_errors(self, failed: list[Prepared]) -> None:
        self.sink(Rows([p.item.id for p in failed], [p.item.modality for p in failed], None,
                       [p.error for p in failed]))
        self._done(len(failed), len(failed))

    def _done(self, n: int, errors: int) -> None:
        self.items_done += n
        self.errors += errors
        for _ in range(n):
            self._slots.release()
        self.on_rows(n, errors)
