"""The model alone, in this process: Handspring's embedder against transformers' CLIPModel on the
same weights and the same inputs, per modality, batch size and precision; the machine's GEMM peak
(one big ``torch.mm`` per dtype) and the fraction of it each run reaches; and preprocessing
(decode + resize + normalise) per photo size.

FLOPs are counted once per input shape with ``torch.utils.flop_counter`` on the transformers
model (the arithmetic is the same whichever implementation runs it). Times are medians over
repetitions after a warm-up; the machine is shared, so medians, not minima.
"""

from __future__ import annotations

import copy
import functools
import io
import statistics
import time
from collections.abc import Callable

import torch

from . import inputs as bench_inputs


def timeit(fn: Callable[[], object], min_time: float, min_reps: int = 3, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 200:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "reps": len(times)}


def gemm_peak(n: int, dtype: torch.dtype, min_time: float) -> float:
    """GFLOP/s of one n x n x n matrix product (best of the repetitions: the machine's ceiling)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    r = timeit(lambda: torch.mm(a, b, out=out), min_time, min_reps=5, warmup=3)
    return 2 * n**3 / r["min_s"] / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class Transformers:
    """The reference's compute path: tower, projection, normalisation (as the reference server)."""

    def __init__(self, model, processor, dtype: torch.dtype):
        self.model = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
        self.processor = processor
        self.dtype = dtype

    @torch.no_grad()
    def images(self, pixels: torch.Tensor) -> torch.Tensor:
        e = self.model.visual_projection(self.model.vision_model(pixel_values=pixels.to(self.dtype))[1])
        return (e / e.norm(dim=-1, keepdim=True)).float()

    @torch.no_grad()
    def texts(self, tokenized: dict) -> torch.Tensor:
        e = self.model.text_projection(self.model.text_model(**tokenized)[1])
        return (e / e.norm(dim=-1, keepdim=True)).float()


def precisions_to_run(requested: list[str]) -> list[str]:
    """Resolved precisions, fp32 first (the baseline), each once."""
    from handspring_models.runtime.precision import resolve

    out = ["fp32"]
    for p in requested:
        r = resolve(p)
        if r not in out:
            out.append(r)
    return out


def timeit_group(fns: list[Callable[[], object]], min_time: float, min_reps: int = 3, warmup: int = 2,
                 idle_s: float = 0.0) -> list[dict]:
    """Time several functions in alternation (A B A B ...), so that a machine whose speed drifts
    (a shared or throttled CPU) slows them alike and their ratio stays fair.

    ``idle_s``: a pause before each timed call (not timed). Runtimes with thread pools of their
    own (PyTorch's OpenMP, OpenVINO's TBB) leave their threads spinning for a while after a call,
    on the cores the next function then needs: without the pause, whichever runs after another
    runtime pays for that runtime's spinning."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    while len(times[0]) < min_reps or time.perf_counter() - start < min_time * len(fns):
        for fn, ts in zip(fns, times):
            if idle_s:
                time.sleep(idle_s)
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        if len(times[0]) >= 200:
            break
    return [{"median_s": statistics.median(ts), "min_s": min(ts), "reps": len(ts)} for ts in times]


def measure_peaks(sizes: list[int], precisions: list[str], min_time: float) -> dict:
    return {p: max(gemm_peak(n, {"fp32": torch.float32, "bf16": torch.bfloat16}[p], min_time) for n in sizes)
            for p in precisions}


def run(ckpt, precisions: list[str], cache, quick: bool, log=print) -> dict:
    from transformers import CLIPModel, CLIPProcessor

    import handspring_models

    min_time = 0.05 if quick else 2.0
    batches = [1, 4] if quick else [1, 8, 32]
    gemm_sizes = [256, 512] if quick else [1024, 2048, 4096]  # quick: an emulated bf16 1024^3 takes seconds
    result: dict = {"threads": torch.get_num_threads(), "gemm_n": max(gemm_sizes), "gemm_sizes": gemm_sizes,
                    "batch_sizes": batches, "gemm_peak_gflops": {}, "image": [], "text": [], "preprocess": []}

    # The peak: the best square torch.mm, measured before and after the model runs (a shared VM's
    # speed drifts; the ceiling is the best the machine showed).
    log(f"  GEMM peak: torch.mm n^3 for n in {gemm_sizes} ...")
    gemm_time = 0.3 if quick else 1.0
    before = measure_peaks(gemm_sizes, precisions, gemm_time)

    hf = CLIPModel.from_pretrained(ckpt.hf_dir).eval()
    processor = CLIPProcessor.from_pretrained(ckpt.hf_dir)
    ours = {p: handspring_models.load("clip_vit_b_32", ckpt.weights_dir, precision=p) for p in precisions}
    theirs = {p: Transformers(hf, processor, ours[p].dtype) for p in precisions}

    photos = bench_inputs.photos(cache, quick)
    captions = bench_inputs.captions(quick)
    pixel_pool = [ours["fp32"].prepare("image", ph.data) for ph in photos[:8]]

    for batch in batches:
        pixel_list = [pixel_pool[i % len(pixel_pool)] for i in range(batch)]
        pixels = torch.stack(pixel_list)
        image_flops = count_flops(lambda pixels=pixels: theirs["fp32"].images(pixels))
        texts = [captions[(i + 3) % len(captions)] for i in range(batch)]
        tokenized = processor(text=texts, return_tensors="pt", padding=True)
        token_list = [ours["fp32"].prepare("text", t) for t in texts]
        text_flops = count_flops(lambda tokenized=tokenized: theirs["fp32"].texts(tokenized))
        for p in precisions:
            t, h = theirs[p], ours[p]
            for modality, n_flops, pair in (
                ("image", image_flops, (functools.partial(t.images, pixels),
                                        functools.partial(h.encode, "image", pixel_list))),
                ("text", text_flops, (functools.partial(t.texts, tokenized),
                                      functools.partial(h.encode, "text", token_list))),
            ):
                timed = timeit_group(list(pair), min_time, min_reps=3 if not quick else 5)
                for impl, r in zip(("transformers", "handspring"), timed):
                    row = {"impl": impl, "precision": p, "batch": batch, "ms_per_batch": r["median_s"] * 1000,
                           "ms_per_item": r["median_s"] * 1000 / batch, "items_per_s": batch / r["median_s"],
                           "gflop_per_item": n_flops / batch / 1e9, "gflops": n_flops / r["median_s"] / 1e9,
                           "best_gflops": n_flops / r["min_s"] / 1e9, "reps": r["reps"]}
                    if modality == "text":
                        row["tokens"] = int(tokenized["input_ids"].shape[1])
                    result[modality].append(row)
                    log(f"    {modality:5s} {impl:12s} {p:4s} batch {batch:3d}: {row['items_per_s']:8.1f}/s "
                        f"{row['ms_per_item']:7.2f} ms/item  {row['gflops']:6.0f} GFLOP/s")

    after = measure_peaks(gemm_sizes, precisions, gemm_time)
    result["gemm_peak_before_gflops"], result["gemm_peak_after_gflops"] = before, after
    result["gemm_peak_gflops"] = {p: max(before[p], after[p]) for p in precisions}
    for p, v in result["gemm_peak_gflops"].items():
        log(f"    GEMM peak {p}: {v:.0f} GFLOP/s (before {before[p]:.0f}, after {after[p]:.0f})")
    for modality in ("image", "text"):
        for r in result[modality]:
            r["peak_fraction"] = r["gflops"] / result["gemm_peak_gflops"][r["precision"]]
    # speed-ups against transformers at fp32 and at the same precision
    for modality in ("image", "text"):
        base = {(r["batch"], r["precision"]): r["items_per_s"] for r in result[modality] if r["impl"] == "transformers"}
        for r in result[modality]:
            r["vs_transformers_fp32"] = r["items_per_s"] / base[(r["batch"], "fp32")]
            r["vs_transformers_same_precision"] = r["items_per_s"] / base[(r["batch"], r["precision"])]

    # preprocessing, one photo per size: bytes -> model-ready tensor
    seen = set()
    for ph in photos:
        size = (max(ph.width, ph.height), min(ph.width, ph.height))
        if size in seen:
            continue
        seen.add(size)
        reps = {"min_time": 0.05 if quick else 1.0, "min_reps": 3}

        def reference_pre(data=ph.data):  # as the reference server: PIL decode, RGB, CLIPProcessor
            from PIL import Image

            image = Image.open(io.BytesIO(data))
            image = image if image.mode == "RGB" else image.convert("RGB")
            return processor(images=[image], return_tensors="pt")["pixel_values"]

        impls = [("transformers (CLIPProcessor)", "fp32", reference_pre)]
        impls += [("handspring", p, (lambda p=p, data=ph.data: ours[p].prepare("image", data))) for p in precisions]
        for impl, p, fn in impls:
            r = timeit(fn, **reps)
            result["preprocess"].append({"impl": impl, "precision": p, "photo": ph.name, "width": ph.width,
                                         "height": ph.height, "megapixels": ph.megapixels,
                                         "ms": r["median_s"] * 1000})
            log(f"    preprocess {ph.name:28s} {impl:28s} {p:4s}: {r['median_s'] * 1000:7.1f} ms")
    return result
