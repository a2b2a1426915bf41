"""Bulk embedding against the model alone, on the same inputs and batch size.

    .venv/bin/python -m bench.embed_throughput --weights DIR --images FOLDER [--limit N]
        [--batch-size 32] [--rounds 2] [--ray]

Model alone: every input prepared beforehand (untimed), then ``encode`` on full batches, with
all the cores. ``embed``: ``handspring_models.embed.run`` on the folder into a fresh output
(enumeration, reading, decoding, forward passes and Parquet writing, the model already loaded).
``--ray``: the same through ``handspring_models.ray`` on a local Ray cluster. The two (three)
alternate for ``--rounds`` rounds, since this machine's speed drifts; each figure is a round's
items/s, and the ratio is taken per round. On a shared machine the wall-clock figures move with
the neighbours' load; CPU-seconds per item (this process's threads) move much less, and their
ratio says how much work the pipeline adds to the forward passes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

import handspring_models
from handspring_models import embed


def model_alone(embedder, files: list[Path], batch_size: int) -> tuple[float, float]:
    """(items/s, CPU-seconds per item) of the forward passes alone."""
    prepared = [embedder.prepare("image", f.read_bytes()) for f in files]
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(prepared), batch_size):
        embedder.encode("image", prepared[i:i + batch_size])
    return len(prepared) / (time.perf_counter() - started), (time.process_time() - cpu) / len(prepared)


def bulk(embedder, folder: Path, batch_size: int, workers: int | None) -> tuple[float, float]:
    """(items/s, CPU-seconds per item) of a whole ``embed`` run."""
    out = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    try:
        cpu = time.process_time()
        summary = embed.run([folder], out / "vectors", embedder=embedder, batch_size=batch_size, workers=workers,
                            progress=False)
        n = summary.embedded + summary.errors
        return n / summary.seconds, (time.process_time() - cpu) / n
    finally:
        shutil.rmtree(out, ignore_errors=True)


def ray_path(weights: Path, folder: Path, batch_size: int) -> float:
    from handspring_models.ray import embed_files

    out = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    try:
        started = time.perf_counter()
        embed_files(sorted(str(p) for p in folder.rglob("*.jpg")), out / "vectors", feature="clip_vit_b_32",
                           weights_dir=weights, precision="fp32", batch_size=batch_size, concurrency=1,
                           threads_per_actor=torch.get_num_threads())
        return len(list(folder.iterdir())) / (time.perf_counter() - started)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--limit", type=int, default=512, help="images used (the first N, sorted)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ray", action="store_true")
    args = p.parse_args(argv)

    embedder = handspring_models.load("clip_vit_b_32_image", args.weights, precision="fp32")
    embedder.warmup()
    files = []
    for f in sorted(args.images.rglob("*.jpg")):  # decodable ones only: the model alone needs them all
        try:
            embedder.prepare("image", f.read_bytes())
        except ValueError:
            continue
        files.append(f)
        if len(files) == args.limit:
            break
    folder = Path(tempfile.mkdtemp(prefix="embed-bench-in-"))
    for f in files:  # the same inputs for every path
        (folder / f.name).symlink_to(f.resolve())
    if args.ray:
        import ray

        # One logical CPU more than the actor takes: Ray Data's read tasks need one to be scheduled
        # (with every CPU held by the actor, the job waits for ever).
        ray.init(num_cpus=torch.get_num_threads() + 1, include_dashboard=False, log_to_driver=False)
    results = []
    for round_ in range(args.rounds):
        row = {"round": round_}
        row["model_alone"], row["model_alone_cpu_s"] = model_alone(embedder, files, args.batch_size)
        row["embed"], row["embed_cpu_s"] = bulk(embedder, folder, args.batch_size, args.workers)
        if args.ray:
            row["ray"] = ray_path(args.weights, folder, args.batch_size)
        row["embed_vs_model"] = row["embed"] / row["model_alone"]
        row["embed_vs_model_by_cpu"] = row["model_alone_cpu_s"] / row["embed_cpu_s"]
        if args.ray:
            row["ray_vs_embed"] = row["ray"] / row["embed"]
        results.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
