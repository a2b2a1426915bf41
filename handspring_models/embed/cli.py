"""The command line of ``python -m handspring_models.embed`` (``handspring embed``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from ..registry import DEFAULT_MODEL

EPILOG = """\
examples:
  python -m handspring_models.embed photos/ --out vectors/ --weights weights/clip_vit_b_32
  python -m handspring_models.embed captions.csv --column caption --texts --out text_vectors/
  python -m handspring_models.embed shards/*.tar --modality image --out laion_vectors/
  python -m handspring_models.embed photos/ --out vectors/ --weaviate http://localhost:8080 --collection Photo

Run it again with the same --out after any stop: it skips what is written and goes on.
"""


def parser(prog: str = "python -m handspring_models.embed") -> argparse.ArgumentParser:
    import handspring_models

    p = argparse.ArgumentParser(prog=prog,
                                description="Embed a collection (folders, lists, webdataset shards) into a resumable "
                                            "Parquet dataset.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a folder (recursive), a .txt/.csv/.parquet list of paths or texts, or a webdataset .tar shard")
    p.add_argument("--out", required=True, help="the Parquet dataset directory to write (and resume)")
    p.add_argument("--feature", default=DEFAULT_MODEL,
                   help="a feature (e.g. clip_vit_b_32_image) or a model's name or alias (default clip_vit_b_32)")
    p.add_argument("--weights", dest="weights_dir", help="weights folder (default: the library's folder for the model)")
    p.add_argument("--precision", default="fp32", choices=list(handspring_models.PRECISIONS))
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="unit vectors (--normalize) or the model's raw outputs (--no-normalize); "
                        "default: the model's convention, what Weaviate's own container returns")
    p.add_argument("--modality", action="append", dest="modalities", metavar="MODALITY",
                   help="embed only this modality (repeatable; default: all the feature's)")
    p.add_argument("--column", help="list files: the column of paths or texts (needed when there are several)")
    p.add_argument("--id-column", help="list files: a column of ids (default: the path, or a text's row number)")
    p.add_argument("--texts", action="store_true", help="list files hold texts to embed, not paths")
    p.add_argument("--batch-size", type=_positive, default=32, help="inputs per forward pass (default 32)")
    p.add_argument("--workers", type=_positive, help="decoding threads (default: the CPUs available)")
    p.add_argument("--threads", type=_positive, help="torch threads for the forward passes (default: torch's)")
    p.add_argument("--rows-per-part", type=_positive, default=100_000,
                   help="publish a part file at this many rows (default 100000)")
    p.add_argument("--part-seconds", type=float, default=60.0,
                   help="... or once it is this old: a kill loses at most this much work (default 60)")
    p.add_argument("--row-group-rows", type=_positive, default=1024, help="rows per Parquet row group (default 1024)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.add_argument("--weaviate", metavar="URL", help="also import each vector into Weaviate at URL (v4 client, gRPC)")
    p.add_argument("--collection", help="with --weaviate: the collection (it must exist)")
    p.add_argument("--grpc-port", type=_positive, default=50051, help="with --weaviate: its gRPC port (default 50051)")
    p.add_argument("--weaviate-api-key", help="with --weaviate: an API key (default: $WEAVIATE_API_KEY)")
    p.add_argument("--weaviate-batch-size", type=_positive, default=100)
    p.add_argument("-v", "--verbose", action="store_true", help="log each published part")
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _interrupt_on_sigterm() -> None:
    """SIGTERM stops like Ctrl-C: what was embedded is published, the rest is for the next run."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None, prog: str = "python -m handspring_models.embed") -> int:
    import os

    args = parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.weaviate and not args.collection:
        print("error: --weaviate needs --collection", file=sys.stderr)
        return 2
    from handspring_models import WeightsError

    from . import run
    from .dataset import OutputError
    from .sources import SourceError

    _interrupt_on_sigterm()
    client = collection = None
    try:
        if args.weaviate:
            from .weaviate_sink import connect

            client = connect(args.weaviate, args.grpc_port, args.weaviate_api_key or os.environ.get("WEAVIATE_API_KEY"))
            collection = client.collections.get(args.collection)
            if not collection.exists():
                print(f"error: weaviate at {args.weaviate} has no collection {args.collection!r}", file=sys.stderr)
                return 2
        summary = run(args.inputs, args.out, args.feature, args.weights_dir, args.precision,
                      modalities=args.modalities, column=args.column, id_column=args.id_column, texts=args.texts,
                      batch_size=args.batch_size, workers=args.workers, threads=args.threads,
                      normalize=args.normalize, row_group_rows=args.row_group_rows, rows_per_part=args.rows_per_part,
                      part_seconds=args.part_seconds, progress=args.progress, weaviate_collection=collection,
                      weaviate_batch_size=args.weaviate_batch_size)
    except (SourceError, OutputError, WeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()
    print(summary.line(), flush=True)
    return 130 if summary.interrupted else 0
