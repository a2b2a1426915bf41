"""Bulk embedding into Parquet: ``python -m handspring_models.embed INPUT... --out DIR``.

Inputs: folders (recursive; files of the loaded feature's modalities), lists of paths or texts
(.txt, .csv or .parquet, ``--column``), webdataset ``.tar`` shards (img2dataset's layout). Output:
a Parquet dataset directory (``handspring_models.embed.dataset`` says how it stays readable and
resumable through any kill). Function API: ``run(...)`` returns a ``Summary``; ``main(argv)`` is
the command line.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..registry import DEFAULT_MODEL
from .dataset import OutputError, PartWriter, Rows, describe
from .sources import Item, SourceError, Sources

__all__ = ["run", "main", "Summary", "Sources", "Item", "OutputError", "SourceError", "describe"]

log = logging.getLogger("handspring_models.embed")

@dataclass
class Summary:
    embedded: int  # rows with a vector, this run
    errors: int  # error rows, this run
    skipped: int  # inputs already in the output
    seconds: float
    out: Path
    parts: int  # published parts in the output after this run
    weaviate_sent: int = 0
    weaviate_failed: int = 0
    interrupted: bool = False

    @property
    def items_per_second(self) -> float:
        return (self.embedded + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        text = (f"{'interrupted' if self.interrupted else 'done'}: {self.embedded} embedded, {self.errors} errors, "
                f"{self.skipped} already done, {self.seconds:.1f} s ({self.items_per_second:.1f} items/s); "
                f"{self.out} holds {self.parts} parts")
        if self.weaviate_sent or self.weaviate_failed:
            text += f"; weaviate: {self.weaviate_sent} sent, {self.weaviate_failed} refused"
        return text


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run(inputs: list[str | Path], out: str | Path, feature: str = DEFAULT_MODEL, weights_dir: str | Path | None = None,
        precision: str = "fp32", *, embedder=None, modalities: list[str] | None = None, column: str | None = None,
        id_column: str | None = None, texts: bool = False, batch_size: int = 32, workers: int | None = None,
        threads: int | None = None, normalize: bool | None = None, row_group_rows: int = 1024,
        rows_per_part: int = 100_000, part_seconds: float = 60.0, progress: bool | None = None,
        weaviate_collection=None, weaviate_batch_size: int = 100) -> Summary:
    """Embed ``inputs`` into the dataset directory ``out``, skipping what it already holds.

    ``embedder``: an already loaded one (else ``handspring_models.load(feature, weights_dir,
    precision, normalize=normalize)``; ``normalize`` None: the model's own convention). ``modalities``: only these of the feature's. ``texts``: list
    files hold texts, not paths. ``workers``: decoding threads (default: the CPUs available);
    ``threads``: torch threads for the forward passes (default: torch's). ``progress``: a bar on
    stderr (default: when stderr is a terminal). ``weaviate_collection``: a weaviate-client v4
    collection to import every embedded row into. Ctrl-C publishes what was embedded and
    returns with ``interrupted`` set."""
    import torch

    import handspring_models

    started = time.monotonic()
    if embedder is None:
        embedder = handspring_models.load(feature, weights_dir=weights_dir, precision=precision, normalize=normalize)
    elif normalize is not None and normalize != embedder.normalize:
        raise ValueError(f"normalize={normalize} asked of an embedder loaded with normalize={embedder.normalize}")
    in_play = tuple(embedder.modalities)
    if modalities:
        unknown = [m for m in modalities if m not in embedder.modalities]
        if unknown:
            raise SourceError(f"feature {embedder.feature} does not embed {', '.join(unknown)} "
                              f"(it has: {', '.join(embedder.modalities)})")
        in_play = tuple(modalities)
    sources = Sources(tuple(Path(p) for p in inputs), in_play, column, id_column, texts)
    metadata = {
        "model": embedder.model_name, "feature": embedder.feature, "precision": embedder.precision,
        "weights_manifest_sha256": embedder.manifest_sha256, "output_convention": embedder.describe_output(),
        "dim": embedder.dim, "weights_source": embedder.source, "license": embedder.license,
        "library_version": handspring_models.__version__,
    }
    sink = None
    if weaviate_collection is not None:
        from .weaviate_sink import WeaviateSink

        sink = WeaviateSink(weaviate_collection, batch_size=weaviate_batch_size)
    writer = PartWriter(out, embedder.dim, metadata, row_group_rows=row_group_rows, rows_per_part=rows_per_part,
                        part_seconds=part_seconds, on_publish=sink.flush if sink else None)
    interrupted = False
    try:
        done = writer.done
        total = sum(1 for key in sources.keys() if key not in done)
        skipped = len(done)
        bar = _progress_bar(total, progress)
        counts = {"errors": 0}

        def on_rows(n: int, errors: int) -> None:
            counts["errors"] += errors
            bar.update(n)
            if errors:
                bar.set_postfix(errors=counts["errors"], refresh=False)

        def write(rows: Rows) -> None:
            if sink is not None:
                sink.add(rows)
            writer.add(rows)

        from .pipeline import Pipeline

        pipeline = Pipeline(embedder, write, batch_size=batch_size, workers=workers or default_workers(),
                            threads=threads or torch.get_num_threads(), on_rows=on_rows)
        try:
            pipeline.run(item for item in sources.items() if (item.modality, item.id) not in done)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        writer.close(publish=True)  # what was embedded, interrupted or not
    except BaseException:
        writer.close(publish=False)
        raise
    finally:
        if sink is not None:
            sink.close()
    from .dataset import published_parts

    return Summary(embedded=pipeline.items_done - pipeline.errors, errors=pipeline.errors, skipped=skipped,
                   seconds=time.monotonic() - started, out=Path(out), parts=len(published_parts(Path(out))),
                   weaviate_sent=sink.sent if sink else 0, weaviate_failed=sink.failed if sink else 0,
                   interrupted=interrupted)


def _progress_bar(total: int, show: bool | None):
    import sys

    from tqdm import tqdm

    if show is None:
        show = sys.stderr.isatty()
    return tqdm(total=total, unit="item", disable=not show, dynamic_ncols=True, smoothing=0.1)


def main(argv: list[str] | None = None, prog: str = "python -m handspring_models.embed") -> int:
    from .cli import main as cli_main

    return cli_main(argv, prog)
