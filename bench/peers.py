"""(f) Peers: Handspring's model alone against ONNX Runtime and OpenVINO on the same weights and the
same prepared inputs (issue 17).

Handspring runs as a user loads it: ``handspring_models.load("clip_vit_b_32", precision=P,
backend=B)`` timed as ``emb.encode(modality, prepared)``. The peers are built here, in the bench's
own process, from a dense fp32 copy of exactly those weights (loaded with weight packing off): each
tower is wrapped in a small ``nn.Module`` and exported with ``torch.onnx.export(dynamo=True)``
(dynamic batch, and dynamic sequence for texts), then run by ONNX Runtime (fp32, and dynamic int8
as a reference) and by OpenVINO (f32 and bf16, from the ONNX file converted to OpenVINO's IR).
The exports are cached under the bench cache, keyed by the checkpoint, our model code and the
libraries' versions.

The peers get the batch tensors the embedder builds itself (stacked pixels; ``pad_causal`` token
rows and end-of-text indices, so no peer pads texts to 77), and their outputs are normalized as the
embedder does. Per case, every engine is timed in alternation (``timeit_group``), medians of the
repetitions; ratio = peer items/s / Handspring items/s at the same precision (> 1: the peer is
faster). Min cosine of each engine's vectors against Handspring fp32 (torch) on the same inputs.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .model_bench import timeit_group

_STAMP = "bench-peers.json"
BACKENDS = ("torch", "openvino")  # Handspring's backends; torch is always run: it is the baseline
REFERENCE = "handspring_torch_fp32"  # every ratio's and cosine's reference at fp32
# A pause before each timed call, so that no engine starts while the previous one's threads still
# spin on the cores it needs (see bench/README.md).
IDLE_S = 0.02


@dataclass
class Engine:
    """One way to run the model: Handspring at a precision and backend, or a peer runtime."""

    images: Callable[[Sequence[torch.Tensor]], np.ndarray]
    texts: Callable[[Sequence[torch.Tensor]], np.ndarray]
    info: dict = field(default_factory=dict)  # what it actually runs, notes
    embedder: object = None  # Handspring's engines: the loaded embedder

    def encode(self, modality: str, prepared: Sequence[torch.Tensor]) -> np.ndarray:
        return (self.images if modality == "image" else self.texts)(prepared)


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    modality: str
    batch: int
    long_text: bool = False


def cases(quick: bool) -> list[Case]:
    """The issue's rows; quick mode runs batch 4 where the full run has 32."""
    big = 4 if quick else 32
    return [Case("image_b1", "image, batch 1", "image", 1),
            Case(f"image_b{big}", f"image, batch {big}", "image", big),
            Case("text_b1", "text, batch 1", "text", 1),
            Case(f"text_b{big}_long", f"text, batch {big}, with a 77-token text", "text", big, long_text=True),
            Case(f"text_b{big}_short", f"text, batch {big}, short", "text", big)]


def _status_mb() -> dict[str, float]:
    """This process's resident memory now and its peak (VmRSS, VmHWM), in MB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def versions() -> dict:
    import onnx
    import onnxruntime
    import onnxscript
    import openvino

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
            "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


def _weights_fingerprint(folder: Path) -> str:
    """Which weights: every file's name, size and modification time (the checkpoint is rebuilt, not
    edited, so this changes whenever it does) - cheaper than hashing 600 MB on every run."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        st = f.stat()
        h.update(f"{f.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _code_fingerprint() -> str:
    """Which model code: the exports are traces of our modules, so a change to them (a new
    kernel path, a computation skipped) must re-export, as the openvino backend re-converts."""
    import handspring_models

    h = hashlib.sha256()
    for f in sorted(Path(handspring_models.__file__).parent.rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- exports

@contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _quantize_int8(src: Path, dst: Path, scratch: Path) -> str:
    """ONNX Runtime's dynamic int8 as its docs recommend for x86: shape inference and graph
    optimization first (``quant_pre_process``), per-channel signed int8 weights, unsigned int8
    activations (U8S8). Returns how the pre-processing went."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst, scratch = src.resolve(), dst.resolve(), scratch.resolve()
    pre = scratch / f"{src.stem}.pre.onnx"
    how = "pre-processed"
    # shape inference leaves its temporary files in the working directory: keep them in the cache
    with contextlib.chdir(scratch):
        try:
            quant_pre_process(str(src), str(pre))
        except Exception:  # noqa: BLE001 - symbolic shape inference gives up on some dynamic graphs
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                how = "pre-processed without symbolic shape inference"
            except Exception as e:  # noqa: BLE001
                pre, how = src, f"not pre-processed ({type(e).__name__})"
        quantize_dynamic(str(pre), str(dst), per_channel=True, weight_type=QuantType.QInt8)
    return how


def ensure_exports(ckpt, cache: Path, log=print) -> dict:
    """The ONNX files (fp32 and int8) and OpenVINO IR of both towers, built once per checkpoint, model
    code and library versions. Returns {"folder", "cached", "seconds": {step: s}, "notes"}."""
    import handspring_models
    from handspring_models.embedder import Tower

    root = cache / f"peers-{ckpt.size}-seed{ckpt.seed}"
    key = {"weights": _weights_fingerprint(ckpt.weights_dir), "code": _code_fingerprint(), **versions()}
    stamp_file = root / _STAMP
    if stamp_file.is_file():
        stamp = json.loads(stamp_file.read_text())
        if stamp.get("key") == key:
            return {"folder": str(root), "cached": True, "seconds": stamp["seconds"], "notes": stamp["notes"]}
    log(f"  exporting the towers to ONNX and OpenVINO in {root} (once per checkpoint) ...")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    seconds: dict[str, float] = {}
    notes: dict[str, str] = {}
    t = time.perf_counter()
    emb = handspring_models.load("clip_vit_b_32", weights_dir=ckpt.weights_dir, precision="fp32")
    model = emb.dense_model()  # the same weights, unpacked: packed oneDNN tensors cannot be exported
    seconds["load_dense_fp32"] = time.perf_counter() - t
    batch = torch.export.Dim("batch", min=1, max=1024)
    n = torch.export.Dim("n", min=2, max=emb.context_length)
    pixels = [torch.zeros(3, emb.image_size, emb.image_size)] * 2
    texts = [emb.prepare("text", text) for text in ("a photo of a dog", "a cat")]
    exports = (("image", pixels, ({0: batch},), ["pixels"]),
               ("text", texts, ({0: batch, 1: n}, {0: batch}), ["tokens", "eot_index"]))
    import openvino as ov

    for tower, prepared, dynamic, names in exports:
        module, args = Tower(model, emb.TOWERS[tower]).eval(), emb.tower_inputs(tower, prepared)
        t = time.perf_counter()
        # the exporter narrates every step, and warns of torchvision ops it cannot register
        with warnings.catch_warnings(), redirect_stdout(None), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")
            # (dynamic,): the tower's forward takes its inputs as one *inputs argument
            torch.onnx.export(module, args, root / f"{tower}.onnx", dynamo=True, dynamic_shapes=(dynamic,),
                              input_names=names, output_names=["features"], external_data=False, verbose=False)
        seconds[f"onnx_export_{tower}"] = time.perf_counter() - t
        t = time.perf_counter()
        notes[f"int8_{tower}"] = _quantize_int8(root / f"{tower}.onnx", root / f"{tower}.int8.onnx", root)
        seconds[f"int8_quantize_{tower}"] = time.perf_counter() - t
        t = time.perf_counter()
        # the weights stay f32 in the IR (save_model would halve them to f16 by default)
        ov.save_model(ov.convert_model(root / f"{tower}.onnx"), root / f"{tower}.xml", compress_to_fp16=False)
        seconds[f"openvino_convert_{tower}"] = time.perf_counter() - t
    for f in [*root.glob("*.pre.onnx"), *root.glob("*.data"), *root.glob("sym_shape_infer_temp.onnx")]:
        f.unlink()  # the quantizer's intermediates
    del emb, model, module, exports
    gc.collect()  # the exporter's graphs: not to be counted in the engines' memory growth
    stamp_file.write_text(json.dumps({"key": key, "seconds": seconds, "notes": notes}, indent=1) + "\n")
    return {"folder": str(root), "cached": False, "seconds": seconds, "notes": notes}


# ---------------------------------------------------------------- engines

def _peer_engine(run_image, run_text, reference) -> Engine:
    """A peer fed the tensors the embedder feeds its own towers, its outputs finished as the
    embedder finishes them (float32, normalized if it normalizes). The outputs are copied: OpenVINO's
    are read-only views of its own buffers."""
    def images(prepared):
        (pixels,) = reference.tower_inputs("image", prepared)
        return reference.finish(torch.tensor(run_image(pixels.numpy())))

    def texts(prepared):
        tokens, eot = reference.tower_inputs("text", prepared)
        return reference.finish(torch.tensor(run_text(tokens.numpy(), eot.numpy())))

    return Engine(images, texts)


def _onnxruntime(folder: Path, suffix: str, threads: int, reference) -> Engine:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    # No busy-waiting between runs: timed in alternation, its spinning threads would take the cores
    # from the engine timed next (on 2 cores, that slows it several-fold)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    image = ort.InferenceSession(str(folder / f"image{suffix}.onnx"), options, providers=["CPUExecutionProvider"])
    text = ort.InferenceSession(str(folder / f"text{suffix}.onnx"), options, providers=["CPUExecutionProvider"])
    engine = _peer_engine(lambda px: image.run(None, {"pixels": px})[0],
                          lambda tok, eot: text.run(None, {"tokens": tok, "eot_index": eot})[0], reference)
    engine.info["runs"] = "int8 (u8 activations, s8 weights)" if suffix else "fp32"
    return engine


def _openvino(folder: Path, hint: str, threads: int, reference) -> Engine:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
    image = core.compile_model(core.read_model(folder / "image.xml"), "CPU", config)
    text = core.compile_model(core.read_model(folder / "text.xml"), "CPU", config)
    image_request, text_request = image.create_infer_request(), text.create_infer_request()
    engine = _peer_engine(lambda px: image_request.infer({"pixels": px})[image.output(0)],
                          lambda tok, eot: text_request.infer({"tokens": tok, "eot_index": eot})[text.output(0)],
                          reference)
    runs = image.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # what it runs, whatever was asked
    engine.info["runs"] = runs
    if runs != hint:
        engine.info["note"] = f"asked for {hint}, OpenVINO runs {runs} on this CPU"
    return engine


def _handspring(ckpt, precision: str, backend: str) -> Engine:
    import handspring_models

    emb = handspring_models.load("clip_vit_b_32", weights_dir=ckpt.weights_dir, precision=precision, backend=backend)
    engine = Engine(functools.partial(emb.encode, "image"), functools.partial(emb.encode, "text"), embedder=emb)
    engine.info["runs"] = emb.precision
    return engine


def _plan(ckpt, precisions: list[str], backends: list[str]) -> list[tuple]:
    """(name, label, precision, baseline, build(folder, threads, reference)) in the table's column
    order: per precision, Handspring torch, Handspring's other backends, then the peers; int8 last:
    Handspring's int8 (torch only; skipped on CPUs without AVX512-VNNI) and ONNX Runtime's dynamic
    int8, whose ratio is against it."""
    plan: list[tuple] = []
    for p in precisions:
        torch_name = f"handspring_torch_{p}"
        for b in backends:
            name = f"handspring_{b}_{p}"
            plan.append((name, f"HS {p}" if b == "torch" else f"HS {b} {p}", p, None if b == "torch" else torch_name,
                         lambda folder, threads, ref, p=p, b=b: _handspring(ckpt, p, b)))
        if p == "fp32":
            plan.append(("onnxruntime_fp32", "ONNX Runtime fp32", p, torch_name,
                         lambda folder, threads, ref: _onnxruntime(folder, "", threads, ref)))
        hint = "f32" if p == "fp32" else p
        plan.append((f"openvino_{hint}", f"OpenVINO {hint}", p, torch_name,
                     lambda folder, threads, ref, hint=hint: _openvino(folder, hint, threads, ref)))
    plan.append(("handspring_torch_int8", "HS int8", "int8", None,
                 lambda folder, threads, ref: _handspring(ckpt, "int8", "torch")))
    plan.append(("onnxruntime_int8", "ONNX Runtime int8 (dynamic)", "int8", "handspring_torch_int8",
                 lambda folder, threads, ref: _onnxruntime(folder, ".int8", threads, ref)))
    return plan


# ---------------------------------------------------------------- start-up and memory, each alone

def measure_ready(name: str, ckpt, folder: Path, threads: int, reference) -> dict:
    """An engine's start-up and memory in a fresh process (``python -m bench.peers ready``): in the
    bench's own process, the allocator reuses what earlier engines and the export freed, so RSS
    growth there says little. The child imports torch and handspring_models first (the ground
    every engine shares), then times building the engine, its runtime's import included."""
    from .servers import REPO

    spec = {"engine": name, "weights_dir": str(ckpt.weights_dir), "folder": str(folder), "threads": threads,
            "normalize": bool(reference.normalize), "context_length": reference.context_length,
            "image_size": reference.image_size, "text": reference.prepare("text", "a photo of a dog").tolist()}
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.peers", "ready", json.dumps(spec)], cwd=REPO,
                              capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        return {"ready_error": "timed out after 600 s"}
    if proc.returncode != 0:
        return {"ready_error": (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ready_child(spec: dict) -> dict:
    from types import SimpleNamespace

    torch.set_num_threads(spec["threads"])
    from handspring_models.clip.embedder import CLIPEmbedder  # the common ground, before the clock starts

    ground = _status_mb()["VmRSS"]
    # The embedder's own input building and finishing, without its weights: this process measures a peer alone
    reference = SimpleNamespace(normalize=spec["normalize"], context_length=spec["context_length"])
    reference.tower_inputs = functools.partial(CLIPEmbedder.tower_inputs, reference)
    reference.finish = functools.partial(CLIPEmbedder.finish, reference)
    builders = {entry[0]: entry[4] for entry in _plan(SimpleNamespace(weights_dir=Path(spec["weights_dir"])),
                                                      ["fp32", "bf16"], list(BACKENDS))}
    t = time.perf_counter()
    engine = builders[spec["engine"]](Path(spec["folder"]), spec["threads"], reference)
    ready_s = time.perf_counter() - t
    at_ready = _status_mb()["VmRSS"]
    # one image and one text: the first call of each allocates the runtime's working memory
    engine.encode("image", [torch.zeros(3, spec["image_size"], spec["image_size"])])
    engine.encode("text", [torch.tensor(spec["text"])])
    return {"ready_s": ready_s, "rss_ground_mb": ground, "rss_at_ready_mb": at_ready,
            "rss_growth_mb": at_ready - ground, "peak_rss_mb": _status_mb()["VmHWM"]}


# ---------------------------------------------------------------- the run

def _case_inputs(case: Case, reference, pixel_pool, captions, long_text) -> list[torch.Tensor]:
    if case.modality == "image":
        return [pixel_pool[i % len(pixel_pool)] for i in range(case.batch)]
    if case.batch == 1:
        return [reference.prepare("text", captions[3])]
    texts = [captions[(i + 3) % len(captions)] for i in range(case.batch)]
    if case.long_text:
        texts[case.batch // 2] = long_text
    return [reference.prepare("text", t) for t in texts]


def _min_cos(vectors: np.ndarray, reference: np.ndarray) -> float:
    a, b = vectors.astype(np.float64), reference.astype(np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def run(ckpt, precisions: list[str], cache: Path, quick: bool, backends: Sequence[str] = BACKENDS,
        log=print) -> dict:
    from handspring_models.runtime.precision import native_bf16

    from . import inputs as bench_inputs

    threads = torch.get_num_threads()
    min_time = 0.02 if quick else 1.0
    backends = ["torch", *[b for b in backends if b != "torch"]]
    result: dict = {"size": ckpt.size, "threads": threads, "precisions": precisions, "backends": backends,
                    "native_bf16": native_bf16(), "min_time_s": min_time, "engines": {}, "cases": []}
    try:
        result["versions"] = versions()
    except ImportError as e:
        result["error"] = f"the peers' libraries are not installed ({e}): make install-dev (requirements-bench.txt)"
        log(f"    {result['error']}")
        return result

    result["export"] = ensure_exports(ckpt, cache, log)
    folder = Path(result["export"]["folder"])
    ex = result["export"]
    log(f"    exports {'cached' if ex['cached'] else 'built'}: " + ", ".join(f"{k} {v:.1f} s" for k, v in ex["seconds"].items()))

    engines: dict[str, Engine] = {}
    plan = _plan(ckpt, precisions, backends)
    for name, label, precision, baseline, build in plan:
        entry: dict = {"label": label, "precision": precision, "baseline": baseline}
        result["engines"][name] = entry
        if precision not in ("fp32", "int8") and not (quick or result["native_bf16"]):
            # as (d): emulated bf16 is slower than fp32 (auto picks fp32 here) and would take minutes
            entry["skipped"] = f"not run: this CPU has no native {precision} (auto runs fp32 here)"
            continue
        reference = engines.get(REFERENCE)
        t = time.perf_counter()
        try:
            engine = build(folder, threads, reference and reference.embedder)
        except (TypeError, ImportError, ValueError, RuntimeError) as e:
            if name == REFERENCE:
                raise
            entry["skipped"] = f"not available: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
            log(f"    {label}: {entry['skipped']}")
            continue
        # here, a backend's one-off conversion (cached beside the weights) is paid when not cached yet
        entry.update(engine.info, built_in_bench_s=time.perf_counter() - t)
        engines[name] = engine
    emb = engines[REFERENCE].embedder
    for name in engines:
        entry = result["engines"][name]
        entry.update(measure_ready(name, ckpt, folder, threads, emb))
        log(f"    {entry['label']:28s} " + (f"ready in {entry['ready_s']:5.2f} s, RSS +{entry['rss_growth_mb']:4.0f} MB "
                                           f"at ready, peak {entry['peak_rss_mb']:4.0f} MB" if "ready_s" in entry
                                           else f"start-up not measured: {entry['ready_error']}")
            + (f"  ({entry['note']})" if entry.get("note") else ""))
    baselines = {name: result["engines"][name]["baseline"] for name in engines}

    photos = bench_inputs.photos(cache, quick)
    captions = bench_inputs.captions(quick)
    pixel_pool = [emb.prepare("image", ph.data) for ph in photos[:8]]  # fp32's exact preprocessing, for all
    long_text = " ".join(bench_inputs.CAPTIONS)  # cut to the context by the tokenizer: a full 77-token row
    for case in cases(quick):
        prepared = _case_inputs(case, emb, pixel_pool, captions, long_text)
        row: dict = {"case": case.name, "label": case.label, "modality": case.modality, "batch": case.batch,
                     "results": {}}
        if case.modality == "text":
            row["tokens"] = [len(t) for t in prepared]
        vectors, live = {}, []
        for name, engine in engines.items():
            try:
                vectors[name] = engine.encode(case.modality, prepared)  # also the first warm-up call
                live.append(name)
            except Exception as e:  # noqa: BLE001 - one engine's failure is reported, the others still run
                row["results"][name] = {"skipped": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        timed = timeit_group([functools.partial(engines[n].encode, case.modality, prepared) for n in live],
                             min_time, min_reps=3, warmup=0,  # the call above warmed each up
                             idle_s=IDLE_S)
        for name, t in zip(live, timed):
            row["results"][name] = {"items_per_s": case.batch / t["median_s"], "ms_per_batch": t["median_s"] * 1000,
                                    "reps": t["reps"]}
            if REFERENCE in vectors:
                row["results"][name]["min_cos"] = _min_cos(vectors[name], vectors[REFERENCE])
        for name in live:
            base = baselines[name]
            r = row["results"][name]
            if base and "items_per_s" in row["results"].get(base, {}):
                r["ratio"] = r["items_per_s"] / row["results"][base]["items_per_s"]
        result["cases"].append(row)
        log(f"    {case.label:40s} " + "  ".join(
            f"{result['engines'][n]['label']} {row['results'][n]['items_per_s']:.1f}/s"
            + (f" ({row['results'][n]['ratio']:.2f}x)" if "ratio" in row["results"][n] else "") for n in live))
    for name, entry in result["engines"].items():
        per_case = [c["results"].get(name, {}) for c in result["cases"]]
        for modality in ("image", "text"):
            cos = [r["min_cos"] for c, r in zip(result["cases"], per_case) if c["modality"] == modality and "min_cos" in r]
            if cos:
                entry[f"min_cos_{modality}"] = min(cos)
    return result


# ---------------------------------------------------------------- the table

def format_peers(peers: dict) -> str:
    from .report import _f, _sig, _table

    lines = [f"\n(f) PEERS: the model alone, same {peers.get('size', '?')} random weights and the same prepared "
             f"inputs, {peers.get('threads', '?')} threads; items/s, median, engines timed in alternation; "
             f"(ratio) = peer / Handspring at the same precision, > 1 means the peer is faster"]
    if "error" in peers:
        return "\n".join([*lines, f"    !! {peers['error']}"])
    engines = peers["engines"]
    live = [n for n, e in engines.items() if "skipped" not in e]
    rows = []
    for case in peers["cases"]:
        row = [case["label"]]
        for name in live:
            r = case["results"].get(name, {})
            cell = _sig(r.get("items_per_s")) if "items_per_s" in r else "failed"
            if "ratio" in r:
                cell += f" ({r['ratio']:.2f}x)"
            row.append(cell)
        rows.append(row)
    lines.append(_table(["model alone, items/s", *(engines[n]["label"] for n in live)], rows))
    rows = [[e["label"], e.get("runs", "-"), _f(e.get("ready_s"), "{:.2f}"), _f(e.get("rss_growth_mb"), "{:.0f}"),
             _f(e.get("peak_rss_mb"), "{:.0f}"), _f(e.get("min_cos_image"), "{:.7f}"), _f(e.get("min_cos_text"), "{:.7f}"),
             e.get("note") or e.get("skipped") or e.get("ready_error", "")] for e in engines.values()]
    lines.append("\n    per engine, each alone in a fresh process that has imported torch and handspring_models: ready = "
                 "import of its runtime + load or compile (not the one-off export); RSS growth at ready; peak RSS after "
                 "one image and one text. Min cos vs HS fp32 over every case")
    lines.append(_table(["engine", "runs", "ready s", "RSS +MB", "peak MB", "min cos images", "min cos texts", "note"],
                        rows, "llrrrrrl"))
    ex = peers["export"]
    lines.append(f"    one-off export ({'cached, from the run that built it' if ex['cached'] else 'this run'}): "
                 + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in ex["seconds"].items()))
    if not peers.get("native_bf16"):
        lines.append("    this CPU has no native bf16: bf16 is emulated (slow; the full run skips it) and OpenVINO runs "
                     "f32 when asked for bf16")
    return "\n".join(lines)


def markdown(peers: dict) -> str:
    """The items/s table as the issue writes it (rows = cases, a column per engine), for a note."""
    from .report import _sig

    if "error" in peers:
        return f"(f) peers failed: {peers['error']}"
    engines = peers["engines"]
    live = [n for n, e in engines.items() if "skipped" not in e]
    lines = ["| model alone, items/s | " + " | ".join(engines[n]["label"] for n in live) + " |",
             "|---|" + "---|" * len(live)]
    for case in peers["cases"]:
        cells = []
        for name in live:
            r = case["results"].get(name, {})
            cells.append((_sig(r["items_per_s"]) + (f" ({r['ratio']:.2f}x)" if "ratio" in r else ""))
                         if "items_per_s" in r else "failed")
        lines.append(f"| {case['label']} | " + " | ".join(cells) + " |")
    cos = "; ".join(f"{e['label']} {e['min_cos_image']:.7f} / {e['min_cos_text']:.7f}"
                    for e in engines.values() if "min_cos_image" in e and "min_cos_text" in e)
    lines.append(f"\n{peers['size']} random weights, {peers['threads']} threads, median, engines in alternation; "
                 "ratio = peer / Handspring at the same precision. Min cosine vs Handspring fp32 (images / texts): "
                 + cos + ".")
    skipped = [f"{e['label']}: {e['skipped']}" for e in engines.values() if "skipped" in e]
    notes = [f"{e['label']}: {e['note']}" for e in engines.values() if e.get("note")]
    lines += [f"- {x}" for x in skipped + notes]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bench.peers ready SPEC: one engine's start-up, in a fresh process
    if len(sys.argv) != 3 or sys.argv[1] != "ready":
        raise SystemExit("usage: python -m bench.peers ready SPEC_JSON (run by bench.peers.measure_ready)")
    print(json.dumps(_ready_child(json.loads(sys.argv[2]))))
