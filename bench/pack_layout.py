"""The layout oneDNN packs linear weights in: CLIP's towers with weights packed for a batch-size
hint of 1 (the plain layout oneDNN keeps for fp32 on AVX2) against ``kernels.PACK_ROWS_HINT``
(a blocked layout), the model alone, timed in alternation on the same inputs.

    .venv/bin/python -m bench.pack_layout                          # full-size random ViT-B/32
    .venv/bin/python -m bench.pack_layout --hints 1,8,64,256 --cases text:1,image:1

Prints items/s per hint and the ratio against hint 1, with the min cosine of every hint's vectors
against hint 1's (the layout changes the summation order only). The weights are the benchmark's
cached checkpoint (built once, as ``make bench`` builds it).
"""

from __future__ import annotations

import argparse
import sys

import torch

from .inputs import prepared_batch
from .model_bench import timeit_group
from .peers import _min_cos


def run(weights_dir, hints: list[int], cases: list[tuple[str, int]], seconds: float, log=print) -> list[dict]:
    import handspring_models
    from handspring_models.runtime import kernels

    default = kernels.PACK_ROWS_HINT
    rows = []
    for modality in sorted({m for m, _ in cases}):
        embedders = {}
        try:
            for hint in hints:
                kernels.PACK_ROWS_HINT = hint
                embedders[hint] = handspring_models.load(f"clip_vit_b_32_{modality}", weights_dir, precision="fp32")
        finally:
            kernels.PACK_ROWS_HINT = default
        for case_modality, batch in cases:
            if case_modality != modality:
                continue
            prepared = prepared_batch(embedders[hints[0]], modality, batch)
            vectors = {hint: e.encode(modality, prepared) for hint, e in embedders.items()}
            fns = [lambda e=e: e.encode(modality, prepared) for e in embedders.values()]
            times = timeit_group(fns, seconds)
            row = {"modality": modality, "batch": batch,
                   "items_per_s": {h: batch / t["median_s"] for h, t in zip(hints, times)},
                   "min_cos": {h: _min_cos(vectors[h], vectors[hints[0]]) for h in hints}}
            base = row["items_per_s"][hints[0]]
            log(f"{modality:5s} batch {batch:3d}  " + "  ".join(
                f"hint {h}: {v:7.1f}/s ({v / base:.2f}x, cos {row['min_cos'][h]:.7f})"
                for h, v in row["items_per_s"].items()))
            rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pack_layout", description=__doc__.split("\n\n")[0])
    p.add_argument("--hints", default=None, help="batch-size hints to pack for (default 1 and PACK_ROWS_HINT)")
    p.add_argument("--cases", default="text:1,text:32,image:1,image:32", help="modality:batch, comma-separated")
    p.add_argument("--seconds", type=float, default=3.0, help="timing per hint and case")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    from handspring_models.runtime import kernels

    from .checkpoint import ensure_checkpoint
    from .servers import REPO

    if not kernels.packs(torch.float32):
        print("oneDNN cannot prepack fp32 weights here: nothing to compare", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    hints = ([int(h) for h in args.hints.split(",")] if args.hints else [1, kernels.PACK_ROWS_HINT])
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    ckpt = ensure_checkpoint(REPO / "bench" / "results" / "cache", "full", log=lambda m: print(m, file=sys.stderr))
    print(f"CLIP ViT-B/32 (random, full size), fp32, {args.threads} threads, medians in alternation; "
          f"ratio against hint {hints[0]}")
    run(ckpt.weights_dir, hints, cases, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
