"""Embedding on a Ray cluster with Ray Data: a stateful class for ``map_batches`` and a
read -> embed -> write_parquet helper. Ray is optional: ``pip install 'ray[data]'``.

    import ray
    from handspring_models.ray import Embed

    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    ds = ds.map_batches(Embed, fn_constructor_kwargs=dict(feature="clip_vit_b_32_image",
                        weights_dir="/mnt/weights/clip_vit_b_32", column="bytes", id_column="path"),
                        concurrency=8, num_cpus=4, batch_size=32, batch_format="pyarrow")
    ds.write_parquet("s3://bucket/vectors/")

Each actor loads the model once and runs ``num_cpus`` torch threads (Ray sets OMP_NUM_THREADS to
the actor's num_cpus; ``threads`` overrides it), so actors never oversubscribe a node. A batch's
rows come back with ``id``, ``modality``, ``vector`` (fixed-size list of float32, null for a bad
input) and ``error`` (null, or why the input could not be embedded), the same columns as
``python -m handspring_models.embed`` writes; a bad input is an error row, never a failed task.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

from .embed.pipeline import prepare_one
from .embed.sources import Item, suffix_modalities
from .registry import DEFAULT_MODEL


class Embed:
    """For ``ds.map_batches(Embed, fn_constructor_kwargs=..., batch_format="pyarrow", ...)``.

    ``column``: the input column, holding encoded file bytes (binary), paths or texts (strings).
    ``modality``: what every row is; by default texts need ``modality="text"``, paths and bytes
    take it from the path's suffix (``id_column``, or the path itself). ``id_column``: the column
    that becomes ``id`` (default ``path``, as ``read_binary_files(include_paths=True)`` names it);
    without one, a path is its own id, and a text or bytes row gets its position in its batch,
    which is no use as a key: give texts and bytes an id column. The binary input column is
    dropped from the output; every other column is kept."""

    def __init__(self, feature: str = DEFAULT_MODEL, weights_dir: str | Path | None = None, precision: str = "fp32",
                 column: str = "bytes", modality: str | None = None, id_column: str | None = "path",
                 threads: int | None = None, normalize: bool | None = None):
        import torch

        import handspring_models

        self.threads = threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or torch.get_num_threads()
        torch.set_num_threads(self.threads)
        self.embedder = handspring_models.load(feature, weights_dir=weights_dir, precision=precision, normalize=normalize)
        self.column, self.modality, self.id_column = column, modality, id_column
        self.suffixes = suffix_modalities(tuple(self.embedder.modalities))
        # Decoding threads inside the actor, one torch thread each: the cores the actor was given.
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="handspring-decode",
                                       initializer=torch.set_num_threads, initargs=(1,))

    def _items(self, table: pa.Table) -> list[Item]:
        values = table.column(self.column).to_pylist()
        binary = pa.types.is_binary(table.schema.field(self.column).type) or pa.types.is_large_binary(
            table.schema.field(self.column).type)
        ids = (table.column(self.id_column).to_pylist() if self.id_column and self.id_column in table.column_names
               else [None] * len(values))
        items = []
        for row, (value, key) in enumerate(zip(values, ids)):
            if binary or self.modality == "text":
                modality = self.modality or self.suffixes.get(Path(str(key or "")).suffix.lower(), "unknown")
                items.append(Item(str(key) if key is not None else str(row), modality, lambda v=value: v))
            else:  # a path
                modality = self.modality or self.suffixes.get(Path(str(value)).suffix.lower(), "unknown")
                path = Path(str(value))
                read = (lambda p=path: p.read_bytes().decode("utf-8")) if modality == "text" else path.read_bytes
                items.append(Item(str(key) if key is not None else str(value), modality, read))
        return items

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = self._items(batch)
        prepared = list(self.pool.map(lambda item: prepare_one(self.embedder, item), items))
        vectors = np.zeros((len(items), self.embedder.dim), np.float32)
        errors: list[str | None] = [p.error for p in prepared]
        by_modality: dict[str, list[int]] = {}
        for row, p in enumerate(prepared):
            if p.error is None:
                by_modality.setdefault(p.item.modality, []).append(row)
        for modality, rows in by_modality.items():
            vectors[rows] = self.embedder.encode(modality, [prepared[r].tensor for r in rows])
        mask = pa.array([e is not None for e in errors])
        vector = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.embedder.dim, mask=mask)
        keep = [name for name in batch.column_names
                if name != self.id_column and not (name == self.column and pa.types.is_binary(batch.schema.field(name).type))]
        out = batch.select(keep)
        for name, array in (("id", pa.array([i.id for i in items], pa.string())),
                            ("modality", pa.array([i.modality for i in items], pa.string())),
                            ("vector", vector), ("error", pa.array(errors, pa.string()))):
            if name in out.column_names:
                out = out.drop_columns([name])
            out = out.append_column(name, array)
        return out


def embed_dataset(ds, *, feature: str = DEFAULT_MODEL, weights_dir: str | Path | None = None,
                  precision: str = "fp32", column: str = "bytes", modality: str | None = None,
                  id_column: str | None = "path", batch_size: int = 32, concurrency: int = 1,
                  threads_per_actor: int = 1):
    """``ds`` with the ``Embed`` columns added, run by ``concurrency`` actors of
    ``threads_per_actor`` CPUs each."""
    return ds.map_batches(
        Embed, fn_constructor_kwargs=dict(feature=feature, weights_dir=str(weights_dir) if weights_dir else None,
                                          precision=precision, column=column, modality=modality,
                                          id_column=id_column, threads=threads_per_actor),
        batch_size=batch_size, batch_format="pyarrow", concurrency=concurrency, num_cpus=threads_per_actor)


def embed_files(paths, out: str | Path, *, feature: str = DEFAULT_MODEL, weights_dir: str | Path | None = None,
                precision: str = "fp32", modality: str | None = None, batch_size: int = 32, concurrency: int = 1,
                threads_per_actor: int = 1) -> None:
    """Read files (paths, folders or URIs Ray can read) -> embed -> ``write_parquet(out)``: one
    row per file, ``id`` its path."""
    import ray

    ds = ray.data.read_binary_files(paths, include_paths=True)
    ds = embed_dataset(ds, feature=feature, weights_dir=weights_dir, precision=precision, column="bytes",
                       modality=modality, id_column="path", batch_size=batch_size, concurrency=concurrency,
                       threads_per_actor=threads_per_actor)
    ds.write_parquet(str(out))


def embed_texts(ds, out: str | Path, *, column: str = "text", id_column: str | None = None, **kwargs) -> None:
    """A dataset of texts -> embed -> ``write_parquet(out)``."""
    embed_dataset(ds, column=column, modality="text", id_column=id_column, **kwargs).write_parquet(str(out))
