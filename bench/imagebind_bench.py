"""(d) ImageBind alone, in this process: per modality and precision, preprocessing time per item
(``prepare``: bytes/text -> model input), model items/s at two batch sizes (``encode``), end to
end items/s (prepare then encode, as ``embed`` does) and how far bf16's vectors are from fp32's.

There is no reference to run beside it (the reference package needs torchvision), so these are
this machine's own figures, on random weights of the real size (``imagebind_huge``: the speed
does not depend on the values) and on realistic inputs (``imagebind_inputs``). One feature per
modality is loaded at a time (``imagebind_huge_<m>``: only that tower's weights) and freed after.

Each forward of the big towers takes seconds on a small CPU (a video is 15 ViT-H passes), so
their repetitions are few (``_timing``: down to one timed call per batch for video) and their
figures noisy on a shared machine. bf16's cosine against fp32 is end to end, on the same files:
it includes bf16's own preprocessing (JPEG draft decoding of large photos).
"""

from __future__ import annotations

import gc
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import imagebind_inputs
from .fidelity import cosines
from .model_bench import timeit

MODALITIES = ("text", "image", "video", "audio", "depth", "thermal", "imu")
SEEDS = {"full": 0, "tiny": 0}  # tests/imagebind_cases.WEIGHTS_SEED
_STAMP = "bench-imagebind.json"

# Batch sizes per modality (full size): a video item is 15 clips of ViT-H, so its batches are small.
BATCHES = {m: (1, 8) for m in MODALITIES} | {"video": (1, 2)}
QUICK_BATCHES = {m: (1, 4) for m in MODALITIES} | {"video": (1, 2)}


@dataclass(frozen=True)
class Weights:
    size: str  # "full" or "tiny"
    folder: Path
    seed: int


def _config(size: str):
    from handspring_models.imagebind.model import ImageBindConfig

    if size == "full":
        return ImageBindConfig()
    from tests.imagebind_cases import TINY

    return TINY


def ensure_weights(cache: Path, size: str = "full", log=print) -> Weights:
    """A random-weight ImageBind weights folder, built once per (size, seed, torch, architecture)
    and kept under ``cache`` (the full one is 4.8 GB and takes ~40 s to write)."""
    import torch

    from handspring_models.weights import FORMAT, random_weights

    seed = SEEDS[size]
    config = _config(size)
    root = cache / f"imagebind-{size}-seed{seed}"
    weights = Weights(size, root / "handspring", seed)
    # torch's generator makes the values: a new torch may make other ones
    stamp = {"size": size, "seed": seed, "torch": torch.__version__, "format": FORMAT,
             "architecture": config.to_dict()}
    stamp_file = root / _STAMP
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return weights
    log(f"building the {size} random-weight ImageBind (seed {seed}) in {root} ...")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    random_weights("imagebind_huge", weights.folder, seed, architecture=config)
    stamp_file.write_text(json.dumps(stamp) + "\n")
    return weights


def precisions_for(precisions: list[str], quick: bool) -> list[str]:
    """bf16 only where the CPU runs it natively: emulated, ViT-H in bf16 is slower than fp32 and the
    video rows alone would take many minutes. Quick mode (tiny model) runs every precision asked,
    so CI exercises the code paths on any machine."""
    from handspring_models.runtime.precision import native_bf16

    return [p for p in precisions if p == "fp32" or quick or native_bf16()]


def _timing(modality: str, batch: int, quick: bool) -> dict:
    """timeit's repetitions for one (modality, batch). Full size: at least 3 timed calls of the
    light towers; 2 at batch 1 and 1 at the larger batch for ViT-H images and the 3-clip audio
    tower (a batch of 8 images is ~15-30 s); 1 per batch for video (a video is 15 ViT-H passes:
    ~15-30 s at batch 1). The embedder's ``warmup()`` (one small forward per tower, as the
    service does at start) stands in for the big towers' warm-up call: oneDNN's kernel choice
    costs milliseconds, their calls take seconds."""
    if quick:
        return {"min_time": 0.05, "min_reps": 3, "warmup": 1}
    if modality == "video":
        return {"min_time": 0.0, "min_reps": 1, "warmup": 0}
    if modality in ("image", "audio"):
        return {"min_time": 0.0, "min_reps": 2 if batch == 1 else 1, "warmup": 0}
    return {"min_time": 1.0, "min_reps": 3, "warmup": 1}


class _Batches:
    """One ``encode`` call per call, ``batch`` prepared inputs at a time, cycling through them (texts
    differ in length, so every call takes the next ones); keeps the last output. With ``batch``
    equal to the number of inputs, that output is every input's vector, in order."""

    def __init__(self, emb, modality: str, prepared: list, batch: int):
        self.emb, self.modality, self.prepared, self.batch = emb, modality, prepared, batch
        self.calls = 0
        self.last: np.ndarray | None = None

    def __call__(self) -> None:
        start = self.calls * self.batch
        self.calls += 1
        chunk = [self.prepared[(start + k) % len(self.prepared)] for k in range(self.batch)]
        self.last = self.emb.encode(self.modality, chunk)


def _one_precision(weights: Weights, modality: str, precision: str, items: list, batches: tuple[int, ...],
                   quick: bool, log) -> tuple[dict, np.ndarray]:
    """Load ``imagebind_huge_<modality>`` at one precision and time prepare and encode (the model
    is freed when this returns). Returns the measurements and the vectors of the largest batch
    (every item)."""
    import time

    import handspring_models

    t = time.perf_counter()
    emb = handspring_models.load(f"imagebind_huge_{modality}", weights.folder, precision=precision)
    load_s = time.perf_counter() - t
    emb.warmup()

    def prepare_all() -> list:
        return [emb.prepare(modality, x) for x in items]

    prepared = prepare_all()  # the first pass warms the decoders up
    pre = timeit(prepare_all, min_time=0.05 if quick else 2.0, min_reps=3 if quick else 2, warmup=0)
    prepare_s = pre["median_s"] / len(items)
    out: dict = {"load_s": load_s, "prepare_ms": prepare_s * 1000, "prepare_reps": pre["reps"], "batches": []}
    log(f"    {modality:7s} {precision:4s} loaded in {load_s:4.1f} s; prepare {prepare_s * 1000:8.1f} ms/item")
    vectors = None
    for batch in batches:
        fn = _Batches(emb, modality, prepared, batch)
        r = timeit(fn, **_timing(modality, batch, quick))
        if batch == len(items):
            vectors = fn.last
        per_item = r["median_s"] / batch
        row = {"batch": batch, "ms_per_batch": r["median_s"] * 1000, "ms_per_item": per_item * 1000,
               "items_per_s": 1 / per_item, "best_items_per_s": batch / r["min_s"], "reps": r["reps"],
               # embed(): prepare every item, then encode them together
               "e2e_items_per_s": 1 / (prepare_s + per_item)}
        out["batches"].append(row)
        log(f"    {modality:7s} {precision:4s} batch {batch}: {row['items_per_s']:8.2f}/s "
            f"{row['ms_per_item']:9.1f} ms/item  end to end {row['e2e_items_per_s']:8.2f}/s  ({r['reps']} timed)")
    return out, vectors


def run(cache: Path, precisions: list[str], quick: bool, size: str = "full", log=print, cpu_account=None) -> dict:
    """The whole section: ``size`` is the weights' ("full" imagebind_huge, or "tiny" for CI); quick
    mode also makes shorter inputs, smaller batches and fewer repetitions. ``cpu_account``: a
    class like ``__main__.CpuAccount`` (started on creation, ``read()`` -> dict), to record per
    modality how much CPU other processes took while it was measured."""
    import torch

    weights = ensure_weights(cache, size, log=log)
    batch_table = QUICK_BATCHES if quick else BATCHES
    media = imagebind_inputs.media(cache, {m: max(b) for m, b in batch_table.items()}, quick)
    run_precisions = precisions_for(precisions, quick)
    result: dict = {"weights": {"size": size, "seed": weights.seed, "folder": str(weights.folder)},
                    "threads": torch.get_num_threads(), "precisions": run_precisions,
                    "skipped_precisions": [p for p in precisions if p not in run_precisions], "modalities": {}}
    precisions = run_precisions
    for modality in MODALITIES:
        batches, inputs = batch_table[modality], media[modality]
        entry: dict = {"inputs": inputs.description, "n_inputs": len(inputs.items),
                       "mean_input_bytes": inputs.mean_bytes, "batch_sizes": list(batches), "precisions": {}}
        vectors = {}
        account = cpu_account() if cpu_account else None
        try:
            for p in precisions:
                entry["precisions"][p], vectors[p] = _one_precision(weights, modality, p, inputs.items, batches,
                                                                    quick, log)
        except Exception as e:  # noqa: BLE001  (keep the other modalities, say what broke)
            log(f"!! imagebind {modality} failed: {type(e).__name__}: {e}")
            entry["error"] = f"{type(e).__name__}: {e}"
        gc.collect()  # the last tower's weights, before the next modality loads its own
        if account:
            entry["other_load"] = account.read()
        if "fp32" in vectors and "bf16" in vectors:
            c = cosines(vectors["bf16"], vectors["fp32"])
            entry["bf16_vs_fp32"] = {"min_cos": float(c.min()), "mean_cos": float(c.mean()),
                                     "worst": int(np.argmin(c)), "n": len(c)}
            log(f"    {modality:7s} bf16 vs fp32 min cos {c.min():.6f} over {len(c)} inputs")
        result["modalities"][modality] = entry
    return result
