"""How linear weights are packed, and so which kernel runs them: CLIP's towers with every weight
packed one way or another, the model alone, timed in alternation on the same inputs, in fp32 or
(``--precision bf16``) bf16.

Layouts: ``onednn:H``, oneDNN's layout for a batch-size hint of H (at 1 oneDNN keeps fp32 weights
in their plain layout on AVX2; ``kernels.PACK_ROWS_HINT`` blocks them); ``panels``, the panel
kernel's (``handspring_models.runtime.panel_gemm``, or ``bf16_gemm`` in bf16), what the models use
where it is built, in the build this CPU runs best; ``panels:avx2`` or ``panels:avx512``, the fp32
panel kernel's named build.

    .venv/bin/python -m bench.pack_layout                          # full-size random ViT-B/32
    .venv/bin/python -m bench.pack_layout --layouts onednn:1,onednn:8,onednn:64 --cases text:1,image:1
    .venv/bin/python -m bench.pack_layout --layouts onednn:64,panels:avx2,panels:avx512
    .venv/bin/python -m bench.pack_layout --precision bf16      # oneDNN's bf16 kernels against bf16_gemm

Prints items/s per layout and the ratio against the first, with the min cosine of every layout's
vectors against the first's (the layout changes the summation order only). The weights are the
benchmark's cached checkpoint (built once, as ``make bench`` builds it).
"""

from __future__ import annotations

import argparse
import sys

import torch

from .inputs import prepared_batch
from .model_bench import timeit_group
from .peers import IDLE_S, _min_cos


def run(weights_dir, layouts: list[str], cases: list[tuple[str, int]], seconds: float, log=print,
        precision: str = "fp32") -> list[dict]:
    import handspring_models
    from handspring_models.runtime import kernels, panel_gemm

    defaults = kernels.PACK_ROWS_HINT, kernels.use_panel_kernel
    rows = []
    for modality in sorted({m for m, _ in cases}):
        embedders = {}
        try:
            for layout in layouts:
                kernels.use_panel_kernel = layout.startswith("panels")
                if not kernels.use_panel_kernel:
                    kernels.PACK_ROWS_HINT = int(layout.split(":")[1])
                embedders[layout] = handspring_models.load(f"clip_vit_b_32_{modality}", weights_dir,
                                                           precision=precision)
        finally:
            kernels.PACK_ROWS_HINT, kernels.use_panel_kernel = defaults
        for case_modality, batch in cases:
            if case_modality != modality:
                continue
            prepared = prepared_batch(embedders[layouts[0]], modality, batch)
            vectors = {layout: _encode_on(_isa(layout), e, modality, prepared) for layout, e in embedders.items()}
            fns = [lambda e=e, isa=_isa(layout): _encode_on(isa, e, modality, prepared)
                   for layout, e in embedders.items()]
            try:
                times = timeit_group(fns, seconds, idle_s=IDLE_S)
            finally:
                panel_gemm.isa_override = None
            row = {"modality": modality, "batch": batch,
                   "items_per_s": {layout: batch / t["median_s"] for layout, t in zip(layouts, times)},
                   "min_cos": {layout: _min_cos(vectors[layout], vectors[layouts[0]]) for layout in layouts}}
            base = row["items_per_s"][layouts[0]]
            log(f"{modality:5s} batch {batch:3d}  " + "  ".join(
                f"{layout}: {v:7.1f}/s ({v / base:.2f}x, cos {row['min_cos'][layout]:.7f})"
                for layout, v in row["items_per_s"].items()))
            rows.append(row)
    return rows


def _isa(layout: str) -> str | None:
    """The panel kernel's build a layout names ("panels:avx2"), None for the native one."""
    return layout.split(":")[1] if layout.startswith("panels:") else None


def _encode_on(isa: str | None, embedder, modality: str, prepared):
    from handspring_models.runtime import panel_gemm

    panel_gemm.isa_override = isa
    return embedder.encode(modality, prepared)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pack_layout", description=__doc__.split("\n\n")[0])
    p.add_argument("--layouts", default=None,
                   help="onednn:HINT, panels or panels:ISA (avx2, avx512), comma-separated (default onednn:PACK_ROWS_HINT and, where built, panels)")
    p.add_argument("--cases", default="text:1,text:32,image:1,image:32", help="modality:batch, comma-separated")
    p.add_argument("--seconds", type=float, default=3.0, help="timing per layout and case")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = p.parse_args(argv)
    from handspring_models.runtime import kernels, panel_gemm

    from .checkpoint import ensure_checkpoint
    from .servers import REPO

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.precision]
    if not kernels.onednn_packs(dtype):
        print(f"oneDNN cannot prepack {args.precision} weights here: nothing to compare", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    layouts = (args.layouts.split(",") if args.layouts else
               [f"onednn:{kernels.PACK_ROWS_HINT}"] + (["panels"] if panel_gemm.library() is not None else []))
    if any(layout.startswith("panels") for layout in layouts) and panel_gemm.library() is None:
        print("the panel kernel is not built here (pip install -e . builds it)", file=sys.stderr)
        return 1
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    ckpt = ensure_checkpoint(REPO / "bench" / "results" / "cache", "full", log=lambda m: print(m, file=sys.stderr))
    print(f"CLIP ViT-B/32 (random, full size), {args.precision}, {args.threads} threads, medians in alternation; "
          f"ratio against {layouts[0]}")
    run(ckpt.weights_dir, layouts, cases, args.seconds, precision=args.precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
