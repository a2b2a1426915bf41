"""PyTorch's own compilers on CLIP's towers, the model alone, against the eager torch backend and
ONNX Runtime: is compiling worth a backend? (issue 17's first lever, not part of ``make bench``.)

    .venv/bin/python -m bench.compiled_towers                       # text tower, batch 1 and 32
    .venv/bin/python -m bench.compiled_towers --modality image --batches 1,8

Engines, all fp32 on the same random full-size ViT-B/32 and the same prepared inputs:
- ``eager``: ``handspring_models.load(..., precision="fp32")``, as users run it;
- ``aoti``: the tower exported with dynamic batch (and token count), compiled ahead of time by
  AOTInductor with freezing and max-autotune's C++ GEMM template, then loaded as a package
  (``torch._inductor.aoti_load_package``: no compiler needed to load it);
- ``onnxruntime``: the bench's ONNX export of the same tower (section (f)'s cache).

Prints the compile time and package size, then per batch size the milliseconds per call and the
ratio against ONNX Runtime, timed in alternation with a pause before each call, and each engine's
min cosine against eager.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .inputs import prepared_batch
from .model_bench import timeit_group
from .peers import IDLE_S, _min_cos, _onnxruntime, ensure_exports


def compile_tower(embedder, modality: str, package: Path) -> tuple[object, float]:
    """The tower exported and compiled by AOTInductor into ``package``; returns (runner, seconds)."""
    import torch._inductor.config as inductor

    from handspring_models.embedder import Tower

    tower = Tower(embedder.dense_model(), embedder.TOWERS[modality]).eval()
    batch = torch.export.Dim("batch", min=1, max=256)
    dynamic = ({0: batch},) if modality == "image" else (
        {0: batch, 1: torch.export.Dim("n", min=2, max=embedder.context_length)}, {0: batch})
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            program = torch.export.export(tower, embedder._example(modality), dynamic_shapes=(dynamic,))
        with inductor.patch(freezing=True, max_autotune=True, max_autotune_gemm_backends="CPP"):
            path = torch._inductor.aoti_compile_and_package(program, package_path=str(package))
    return torch._inductor.aoti_load_package(path), time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compiled_towers", description=__doc__.split("\n\n")[0])
    p.add_argument("--modality", choices=["text", "image"], default="text")
    p.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
    p.add_argument("--seconds", type=float, default=3.0, help="timing per engine and batch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--idle", type=float, default=IDLE_S, help="pause before each timed call, s")
    args = p.parse_args(argv)

    import handspring_models

    from .checkpoint import ensure_checkpoint
    from .servers import REPO

    torch.set_num_threads(args.threads)
    cache = REPO / "bench" / "results" / "cache"
    ckpt = ensure_checkpoint(cache, "full", log=lambda m: print(m, file=sys.stderr))
    exports = ensure_exports(ckpt, cache, log=lambda m: print(m, file=sys.stderr))
    modality = args.modality
    eager = handspring_models.load(f"clip_vit_b_32_{modality}", ckpt.weights_dir, precision="fp32")
    peer = _onnxruntime(Path(exports["folder"]), "", args.threads, eager)
    with tempfile.TemporaryDirectory() as scratch:
        package = Path(scratch) / f"{modality}.pt2"
        runner, seconds = compile_tower(eager, modality, package)
        print(f"CLIP ViT-B/32 {modality} tower (random, full size), fp32, {args.threads} threads; AOTInductor: "
              f"compiled in {seconds:.0f} s, package {package.stat().st_size / 1e6:.0f} MB")

        def aoti(prepared):
            return eager.finish(runner(*eager.tower_inputs(modality, prepared)))

        engines = {"eager": lambda prepared: eager.encode(modality, prepared), "aoti": aoti,
                   "onnxruntime": lambda prepared: peer.encode(modality, prepared)}
        for batch in [int(b) for b in args.batches.split(",")]:
            prepared = prepared_batch(eager, modality, batch)
            vectors = {name: np.asarray(fn(prepared)) for name, fn in engines.items()}
            times = timeit_group([lambda fn=fn: fn(prepared) for fn in engines.values()], args.seconds,
                                 warmup=1, idle_s=args.idle)
            peer_s = times[-1]["median_s"]
            print(f"batch {batch:3d}  " + "  ".join(
                f"{name} {t['median_s'] * 1e3:7.2f} ms ({peer_s / t['median_s']:.2f}x of ORT, "
                f"cos {_min_cos(vectors[name], vectors['eager']):.7f})"
                for name, t in zip(engines, times)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
