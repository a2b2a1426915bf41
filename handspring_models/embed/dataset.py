"""The output: a Parquet dataset directory that a reader sees complete at every moment.

Layout of ``OUT/``::

    part-00000.parquet     published parts: complete files, never written again
    part-00001.parquet
    .part-00002.parquet.tmp   the part being written (hidden: readers skip names starting with
                              "." or "_", as pyarrow.dataset, Spark, Ray and DuckDB's globs of
                              part-*.parquet do)
    .lock                  held (flock) by the run writing here

Rows go into the hidden part in row groups as they are embedded. A part is published when it is
big or old enough (``rows_per_part``, ``part_seconds``) and at the end: the file is closed (its
footer written), fsynced, renamed to its ``part-NNNNN.parquet`` name (atomic on POSIX) and the
directory fsynced. So a kill at any moment (Ctrl-C, SIGKILL, power loss) leaves the published
parts, each complete, and at most one hidden file that the next run deletes; what that file held
is embedded again. A run starts by reading the ``(modality, id)`` keys of the published parts and
skips those inputs, so nothing is written twice and nothing is lost.

The skip set holds an 8-byte hash per published row (a sorted numpy array: 80 MB for 10 M rows);
two different keys share a hash with odds of about n^2 / 2^65 (3e-6 for 10 M rows).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PART = re.compile(r"^part-(\d{5,})\.parquet$")
META_PREFIX = "handspring."
# The metadata that must agree for two runs to write into one dataset.
log = logging.getLogger("handspring_models.embed")

MUST_MATCH = ("model", "feature", "precision", "weights_manifest_sha256", "output_convention", "dim")


class OutputError(RuntimeError):
    """The output directory cannot take this run (another run holds it, or it holds other vectors)."""


def schema(dim: int, metadata: dict[str, str]) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("modality", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim)),  # null for an input that failed
            pa.field("error", pa.string()),  # null for an input that was embedded
        ],
        metadata={f"{META_PREFIX}{k}".encode(): str(v).encode() for k, v in metadata.items()},
    )


def read_metadata(path: Path) -> dict[str, str]:
    raw = pq.read_schema(path).metadata or {}
    return {k.decode()[len(META_PREFIX):]: v.decode() for k, v in raw.items() if k.decode().startswith(META_PREFIX)}


def key_hash(modality: str, item_id: str) -> int:
    digest = hashlib.blake2b(f"{modality}\0{item_id}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def published_parts(out: Path) -> list[Path]:
    return sorted((p for p in out.iterdir() if PART.match(p.name)), key=lambda p: int(PART.match(p.name).group(1)))


class DoneKeys:
    """Which ``(modality, id)`` keys the published parts already hold."""

    def __init__(self, hashes: np.ndarray):
        self.hashes = np.unique(hashes.astype(np.uint64))

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, key: tuple[str, str]) -> bool:
        if len(self.hashes) == 0:
            return False
        h = np.uint64(key_hash(*key))
        i = int(np.searchsorted(self.hashes, h))
        return i < len(self.hashes) and self.hashes[i] == h

    @classmethod
    def read(cls, parts: list[Path]) -> DoneKeys:
        chunks = []
        for part in parts:
            file = pq.ParquetFile(part)
            for batch in file.iter_batches(columns=["modality", "id"], batch_size=65536):
                modality, ids = batch.column(0).to_pylist(), batch.column(1).to_pylist()
                chunks.append(np.fromiter((key_hash(m, i) for m, i in zip(modality, ids)), np.uint64, len(ids)))
        return cls(np.concatenate(chunks) if chunks else np.zeros(0, np.uint64))


@dataclass
class Rows:
    """Rows for the writer, column by column."""

    ids: list[str]
    modalities: list[str]
    vectors: np.ndarray | None  # [n, dim] float32, or None when every row is an error
    errors: list[str | None]


class PartWriter:
    """Writes rows into hidden part files in row groups and publishes them (see the module doc).

    ``on_publish`` runs just before a part is published (the Weaviate sink flushes there, so
    a published row has reached Weaviate too)."""

    def __init__(self, out: str | Path, dim: int, metadata: dict[str, str], row_group_rows: int = 1024,
                 rows_per_part: int = 100_000, part_seconds: float = 60.0, on_publish=None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.metadata = {k: str(v) for k, v in metadata.items()}
        self.schema = schema(dim, self.metadata)
        self.row_group_rows = row_group_rows
        self.rows_per_part = rows_per_part
        self.part_seconds = part_seconds
        self.on_publish = on_publish
        self._lock = open(self.out / ".lock", "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise OutputError(f"{self.out} is being written by another run (it holds {self.out / '.lock'})") from None
        for stale in self.out.glob(".part-*.parquet.tmp"):  # a killed run's unpublished part
            stale.unlink()
        parts = published_parts(self.out)
        for part in parts[-1:] + parts[:1]:  # parts of one dataset all agree; the ends are checked
            self._check_compatible(part)
        self.done = DoneKeys.read(parts)
        self.next_number = int(PART.match(parts[-1].name).group(1)) + 1 if parts else 0
        self.published: list[Path] = []
        self.rows_written = 0  # by this run, published or not
        self._pending: list[Rows] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._part_rows = 0
        self._unpublished_since: float | None = None  # when the oldest row not yet published came

    def _check_compatible(self, part: Path) -> None:
        theirs = read_metadata(part)
        clashes = [f"{k}: {theirs.get(k)!r} there, {self.metadata.get(k)!r} now" for k in MUST_MATCH
                   if theirs.get(k) != self.metadata.get(k)]
        if clashes:
            raise OutputError(f"{self.out} holds vectors of another model or setting ({'; '.join(clashes)}); "
                              "write to a new output directory")

    # ------------------------------------------------------------ writing

    def add(self, rows: Rows) -> None:
        if not rows.ids:
            return
        if self._unpublished_since is None:
            self._unpublished_since = time.monotonic()
        self._pending.append(rows)
        self._pending_rows += len(rows.ids)
        if self._pending_rows >= self.row_group_rows:
            self._write_row_group()
        if (self._part_rows + self._pending_rows >= self.rows_per_part
                or time.monotonic() - self._unpublished_since >= self.part_seconds):
            self.publish()

    def _table(self) -> pa.Table:
        ids, modalities, errors, vectors, valid = [], [], [], [], []
        for rows in self._pending:
            ids += rows.ids
            modalities += rows.modalities
            errors += rows.errors
            vectors.append(rows.vectors if rows.vectors is not None else np.zeros((len(rows.ids), self.dim), np.float32))
            valid += [e is None for e in rows.errors]
        flat = pa.array(np.ascontiguousarray(np.concatenate(vectors), dtype=np.float32).reshape(-1))
        mask = pa.array([not v for v in valid])
        vector = pa.FixedSizeListArray.from_arrays(flat, self.dim, mask=mask)
        return pa.Table.from_arrays([pa.array(ids, pa.string()), pa.array(modalities, pa.string()), vector,
                                     pa.array(errors, pa.string())], schema=self.schema)

    def _write_row_group(self) -> None:
        if not self._pending_rows:
            return
        table = self._table()
        if self._writer is None:
            self._tmp = self.out / f".part-{self.next_number:05d}.parquet.tmp"
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
            self._part_rows = 0
        self._writer.write_table(table, row_group_size=len(table))
        self._part_rows += len(table)
        self.rows_written += len(table)
        self._pending, self._pending_rows = [], 0

    def publish(self) -> Path | None:
        """Write what is pending and publish the part under way; None if there was nothing."""
        self._write_row_group()
        if self._writer is None:
            return None
        if self.on_publish is not None:
            self.on_publish()
        self._writer.close()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        final = self.out / f"part-{self.next_number:05d}.parquet"
        os.rename(self._tmp, final)
        _fsync_dir(self.out)
        self._writer, self._tmp, self._unpublished_since = None, None, None
        log.info("published %s (%d rows)", final, self._part_rows)
        self.next_number += 1
        self.published.append(final)
        return final

    def close(self, publish: bool = True) -> None:
        """Publish the rest (``publish``), or drop the unpublished part, and release the lock."""
        try:
            if publish:
                self.publish()
            elif self._writer is not None:
                self._writer.close()
                self._tmp.unlink(missing_ok=True)
                self._writer = None
        finally:
            self._lock.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe(out: str | Path) -> dict:
    """What a dataset directory holds: rows, errors, parts and the metadata (for tests and `--info`)."""
    parts = published_parts(Path(out))
    rows = errors = 0
    for part in parts:
        table = pq.read_table(part, columns=["error"])
        rows += len(table)
        errors += len(table) - table.column("error").null_count
    return {"parts": len(parts), "rows": rows, "errors": errors,
            "metadata": read_metadata(parts[0]) if parts else {}, "paths": [str(p) for p in parts]}
