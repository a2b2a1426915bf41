"""Targets, the printed side-by-side tables, bench.json and throughput.png."""

from __future__ import annotations

import json
import math
from pathlib import Path

# (key, description, how to compute from the result, comparison, threshold, unit)
REFERENCE, OURS, OURS_FP32 = "reference", "handspring", "handspring_fp32"


def _load_point(server: dict | None, modality: str, concurrency: int) -> dict | None:
    if not server or "load" not in server:
        return None
    return server["load"].get(modality, {}).get(str(concurrency))


def _ratio(a, b):
    if a is None or b is None or not b or any(isinstance(x, float) and math.isnan(x) for x in (a, b)):
        return None
    return a / b


def service_summary(servers: dict, clients: int) -> dict:
    """The headline numbers at the Weaviate-like load, per server, and ours / reference."""
    rows = {}
    for name, s in servers.items():
        if "error" in s:
            continue
        img, txt = _load_point(s, "image", clients), _load_point(s, "text", clients)
        rows[name] = {
            "image_req_per_s": img and img["req_per_s"], "image_p50_ms": img and img["p50_ms"],
            "image_p99_ms": img and img["p99_ms"],
            "text_req_per_s": txt and txt["req_per_s"], "text_p50_ms": txt and txt["p50_ms"],
            "text_p99_ms": txt and txt["p99_ms"],
            "single_text_p50_ms": s.get("single_text", {}).get("p50_ms"),
            "ready_s": s.get("ready_s"), "peak_rss_mb": s.get("peak_rss_mb"),
        }
    ratios = {}
    ref = rows.get(REFERENCE)
    if ref:
        for name, r in rows.items():
            if name != REFERENCE:
                ratios[name] = {k: _ratio(v, ref[k]) for k, v in r.items()}
    return {"clients": clients, "servers": rows, "ratios": ratios}


def targets(result: dict) -> list[dict]:
    out = []

    def add(name, value, op, threshold, unit=""):
        met = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        out.append({"name": name, "value": value, "op": op, "target": threshold, "unit": unit, "met": met})

    svc = result.get("service", {}).get("summary")
    if svc:
        r = svc["ratios"].get(OURS, {})
        add("image throughput vs reference", r.get("image_req_per_s"), ">=", 4.0, "x")
        add("text throughput vs reference", r.get("text_req_per_s"), ">=", 4.0, "x")
        add("single text alone, median", svc["servers"].get(OURS, {}).get("single_text_p50_ms"), "<=", 15.0, "ms")
        add("time from process start to ready vs reference", r.get("ready_s"), "<=", 0.5, "x")
        add("peak RSS vs reference", r.get("peak_rss_mb"), "<=", 0.5, "x")
        add("fp32 image throughput vs reference", svc["ratios"].get(OURS_FP32, {}).get("image_req_per_s"),
            ">=", 1.5, "x")
    peers = result.get("peers")
    if peers and peers.get("cases"):
        _peer_targets(peers, add)
    fid = result.get("fidelity")
    if fid and "vs_transformers" in fid:
        f = fid["vs_transformers"].get("fp32")
        if f:
            add("fp32 vs transformers, min cos (photos)", f["image"]["min_cos"], ">=", 0.99999)
            add("fp32 vs transformers, min cos (texts)", f["text"]["min_cos"], ">=", 0.99999)
        for p, f in fid["vs_fp32"].items():
            if p != "fp32":
                add(f"{p} vs fp32, min cos (photos)", f["image"]["min_cos"], ">=", 0.999)
                add(f"{p} vs fp32, min cos (texts)", f["text"]["min_cos"], ">=", 0.999)
    return out


# Issue 17's bar for the model alone: at each precision, none of these peers is faster than
# Handspring in any case of section (f).
PEER_RIVALS = {"fp32": ("onnxruntime_fp32", "openvino_f32"), "bf16": ("openvino_bf16",), "int8": ("onnxruntime_int8",)}


def _peer_targets(peers: dict, add) -> None:
    """Per precision, the worst ratio (peer / Handspring torch) over the cases and the rivals that
    were measured against it; int8's cosines against fp32."""
    for precision, rivals in PEER_RIVALS.items():
        ours, worst = f"handspring_torch_{precision}", None
        for case in peers["cases"]:
            for rival in rivals:
                ratio = case["results"].get(rival, {}).get("ratio")
                if (ratio is not None and peers["engines"].get(rival, {}).get("baseline") == ours
                        and (worst is None or ratio > worst[0])):
                    worst = (ratio, case["label"])
        if worst is not None:
            add(f"model alone, {precision}: fastest peer / Handspring, worst case ({worst[1]})", worst[0], "<=", 1.0, "x")
    int8 = peers["engines"].get("handspring_torch_int8", {})
    if "min_cos_image" in int8:
        add("model alone, int8 vs fp32, min cos (images)", int8["min_cos_image"], ">=", 0.999)
        add("model alone, int8 vs fp32, min cos (texts)", int8["min_cos_text"], ">=", 0.999)


# ---------------------------------------------------------------- printing

def _f(v, fmt="{:.1f}", none="-"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return fmt.format(v)


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    align = align or "l" + "r" * (len(header) - 1)

    def line(cells):
        return "  ".join(str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(cells, widths, align))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def format_report(result: dict) -> str:
    parts = []
    meta = result["meta"]
    parts.append(f"Handspring benchmark  {meta['started']}  ({'QUICK mode: tiny model, numbers mean nothing' if meta['quick'] else 'full'})")
    parts.append(f"machine: {meta['cpu']} | {meta['cores']} cores | {meta['mem_gb']:.0f} GB | torch {meta['torch']} "
                 f"({meta['torch_threads']} threads) | transformers {meta['transformers']} | load avg at start "
                 f"{meta['loadavg_start'][0]:.2f}")
    parts.append(f"code: git {meta.get('git_commit', '?')}"
                 + (f" + uncommitted changes in {', '.join(meta['git_modified'])}" if meta.get("git_modified") else ""))
    parts.append(f"checkpoint: one random-weight {meta['checkpoint']} CLIP ViT-B/32 (transformers CLIPModel), served by both")

    svc = result.get("service")
    if svc and svc.get("summary"):
        s = svc["summary"]
        ref = s["servers"].get(REFERENCE, {})
        rows = []
        spec = [
            ("image throughput (req/s)", "image_req_per_s", "{:.2f}", ">= 4x"),
            ("  image latency p50 (ms)", "image_p50_ms", "{:.0f}", ""),
            ("  image latency p99 (ms)", "image_p99_ms", "{:.0f}", ""),
            ("text throughput (req/s)", "text_req_per_s", "{:.1f}", ">= 4x"),
            ("  text latency p50 (ms)", "text_p50_ms", "{:.1f}", ""),
            ("  text latency p99 (ms)", "text_p99_ms", "{:.1f}", ""),
            ("single text alone, median (ms)", "single_text_p50_ms", "{:.1f}", "<= 15 ms"),
            ("time from start to ready (s, median)", "ready_s", "{:.2f}", "<= 0.5x"),
            ("peak RSS (MB)", "peak_rss_mb", "{:.0f}", "<= 0.5x"),
        ]
        others = [n for n in s["servers"] if n != REFERENCE]
        header = ["", "reference"]
        for n in others:
            header += [n, "ratio"]
        header.append("target")
        for label, key, fmt, target in spec:
            row = [label, _f(ref.get(key), fmt)]
            for n in others:
                row += [_f(s["servers"][n].get(key), fmt), _f(s["ratios"][n].get(key), "{:.2f}x")]
            if key == "image_req_per_s" and OURS_FP32 in others:
                target = ">= 4x (fp32: >= 1.5x)"
            row.append(target)
            rows.append(row)
        parts.append(f"\n(a) SERVICE under Weaviate's load: {s['clients']} concurrent clients, one object per request "
                     f"({svc['duration_s']:g} s per point); photos {svc['photos']}; {svc['texts']} captions")
        parts.append(_table(header, rows, "l" + "r" * (len(header) - 2) + "l"))
        parts.append("    ratio = handspring / reference (for latency, time and memory, lower is better)")

        # concurrency sweep
        conc = svc["concurrency"]
        header = ["clients"]
        names = [n for n in svc["servers"] if "error" not in svc["servers"][n]]
        for modality in ("image", "text"):
            for n in names:
                header.append(f"{modality} {n}")
            if REFERENCE in names and OURS in names:
                header.append(f"{modality} ratio")
        rows = []
        for c in conc:
            row = [str(c)]
            for modality in ("image", "text"):
                vals = {n: _load_point(svc["servers"][n], modality, c) for n in names}
                for n in names:
                    row.append(_f(vals[n] and vals[n]["req_per_s"], "{:.2f}"))
                if REFERENCE in names and OURS in names:
                    r = _ratio(vals[OURS] and vals[OURS]["req_per_s"], vals[REFERENCE] and vals[REFERENCE]["req_per_s"])
                    row.append(_f(r, "{:.2f}x"))
            rows.append(row)
        parts.append("\n    throughput (req/s) vs concurrent clients:")
        parts.append(_table(header, rows))
        noise = [f"{n} {srv['other_load']['other_fraction']:.0%}" for n, srv in svc["servers"].items()
                 if "other_load" in srv]
        if noise:
            parts.append("    CPU taken by other processes while each server was measured: " + ", ".join(noise))
        for n, srv in svc["servers"].items():
            if "error" in srv:
                parts.append(f"    !! {n}: {srv['error'].splitlines()[0]}")
            errs = sum(p.get("errors", 0) for m in srv.get("load", {}).values() for p in m.values())
            if errs:
                parts.append(f"    !! {n}: {errs} failed requests during load")

    model = result.get("model")
    if model:
        peak = model["gemm_peak_gflops"]
        sizes = "/".join(str(n) for n in model.get("gemm_sizes", [model["gemm_n"]]))
        parts.append(f"\n(b) MODEL ALONE (in process, {model['threads']} threads, preprocessing excluded; medians, "
                     f"transformers and handspring timed in alternation).\n    Machine GEMM peak (best square torch.mm, "
                     f"n = {sizes}, before and after): " + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peak.items()))
        for modality in ("image", "text"):
            rows = []
            by = {(r["impl"], r["precision"], r["batch"]): r for r in model[modality]}
            for p in peak:
                for b in model["batch_sizes"]:
                    t, h = by.get(("transformers", p, b)), by.get(("handspring", p, b))
                    if not (t and h):
                        continue
                    rows.append([p, str(b), _f(t["items_per_s"], "{:.1f}"), _f(h["items_per_s"], "{:.1f}"),
                                 _f(h["vs_transformers_same_precision"], "{:.2f}x"),
                                 _f(h["vs_transformers_fp32"], "{:.2f}x"),
                                 _f(h["ms_per_item"], "{:.1f}"), _f(h["gflops"], "{:.0f}"),
                                 _f(t["peak_fraction"], "{:.0%}"), _f(h["peak_fraction"], "{:.0%}")])
            parts.append(f"\n    {modality}s/s" + (f" ({model[modality][0]['gflop_per_item']:.2f} GFLOP per image)"
                                                   if modality == "image" else ""))
            parts.append(_table(["precision", "batch", "transformers/s", "handspring/s", "ratio", "vs tf fp32",
                                 "ms/item", "GFLOP/s", "tf % peak", "hs % peak"], rows))
        if model.get("preprocess"):
            impls = list(dict.fromkeys((r["impl"], r["precision"]) for r in model["preprocess"]))
            photos = list(dict.fromkeys((r["photo"], r["megapixels"]) for r in model["preprocess"]))
            by = {(r["impl"], r["precision"], r["photo"]): r["ms"] for r in model["preprocess"]}
            rows = [[f"{ph} ({mp:.1f} MP)"] + [_f(by.get((i, p, ph)), "{:.1f}") for i, p in impls] for ph, mp in photos]
            parts.append("\n    preprocessing, bytes -> model input (ms per photo):")
            parts.append(_table(["photo"] + [f"{i} {p}" if i == "handspring" else i for i, p in impls], rows))

    fid = result.get("fidelity")
    if fid and fid.get("vs_fp32"):
        parts.append(f"\n(c) FIDELITY: min cosine over {fid['photos']} photos / {fid['texts']} captions (worst input)")
        rows = []
        for p in fid["vs_fp32"]:
            row = [p]
            for key in ("vs_fp32", "vs_transformers", "model_vs_transformers"):
                f = fid[key][p]
                row += [_f(f["image"]["min_cos"], "{:.7f}"), _f(f["text"]["min_cos"], "{:.7f}")]
            rows.append(row)
        parts.append(_table(["precision", "vs fp32: photos", "texts", "vs transformers: photos", "texts",
                             "model only vs tf: photos", "texts"], rows))
    if fid and fid.get("service"):
        rows = [[n, _f(f["image"]["min_cos"], "{:.7f}"), _f(f["text"]["min_cos"], "{:.7f}")]
                for n, f in fid["service"].items()]
        parts.append("\n    service answers vs the reference server's answers to the same requests (min cos):")
        parts.append(_table(["server", "photos", "texts"], rows))

    if result.get("imagebind"):
        parts.append(format_imagebind(result["imagebind"]))
    if result.get("catalog"):
        from .catalog import format_catalog

        parts.append(format_catalog(result["catalog"]))
    if result.get("peers"):
        from .peers import format_peers

        parts.append(format_peers(result["peers"]))

    tg = result.get("targets") or []
    if tg:
        parts.append("\nTARGETS" + (" (quick mode: not meaningful)" if meta["quick"] else ""))
        rows = []
        for t in tg:
            fmt = "{:.7f}" if t["unit"] == "" else ("{:.2f}x" if t["unit"] == "x" else "{:.1f} ms")
            thr = ("{:g}" if t["unit"] == "" else ("{:g}x" if t["unit"] == "x" else "{:g} ms")).format(t["target"])
            met = "n/a" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
            rows.append([t["name"], _f(t["value"], fmt), f"{t['op']} {thr}", met])
        parts.append(_table(["target", "measured", "goal", ""], rows, "lrrl"))
    other = meta.get("other_load")
    if other:
        parts.append(f"\nother processes used {other['other_fraction']:.0%} of the machine's CPU during the run "
                     f"({other['other_cores']:.2f} cores on average; hypervisor steal {other['steal_fraction']:.0%})"
                     + ("  <- the machine was not idle: ratios are noisy" if other["other_fraction"] > 0.05 else ""))
    parts.append(f"total benchmark time {meta.get('elapsed_s', 0):.0f} s")
    return "\n".join(parts)


def _sig(v, digits: int = 3) -> str:
    """A rate or a time with ``digits`` significant figures: 0.0312, 1.23, 45.6, 789, 1234."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if v == 0 or abs(v) >= 10 ** (digits - 1):
        return f"{v:.0f}"
    return f"{v:.{max(0, digits - 1 - math.floor(math.log10(abs(v))))}f}"


def format_imagebind(ib: dict) -> str:
    """(d): one row per modality: preprocessing, model and end-to-end throughput per precision."""
    precisions = ib["precisions"]
    w = ib["weights"]
    model = "imagebind_huge" if w["size"] == "full" else "TINY test model"
    heading = (f"\n(d) IMAGEBIND ALONE per modality (in process, {ib['threads']} threads; random-weight {model}, "
               f"seed {w['seed']}; no reference can run here).\n    prepare = bytes/text -> model input; "
               "model = encode only, batch 1 and batch N; end to end = prepare + encode at batch N (as embed() does)")
    lines = [heading]
    header = ["modality", "N"] + [f"prepare ms {p}" for p in precisions]
    for p in precisions:
        header += [f"{p} b1/s", f"{p} bN/s"]
    header += [f"e2e {p}/s" for p in precisions] + ["bf16 min cos", "others' CPU"]
    rows, notes = [], []
    for modality, e in ib["modalities"].items():
        row = [modality, str(max(e["batch_sizes"]))]
        per = e["precisions"]
        row += [_sig(per.get(p, {}).get("prepare_ms")) for p in precisions]
        for p in precisions:
            by = {b["batch"]: b for b in per.get(p, {}).get("batches", [])}
            row += [_sig(by.get(1, {}).get("items_per_s")),
                    _sig(by.get(max(e["batch_sizes"]), {}).get("items_per_s"))]
        for p in precisions:
            by = {b["batch"]: b for b in per.get(p, {}).get("batches", [])}
            row.append(_sig(by.get(max(e["batch_sizes"]), {}).get("e2e_items_per_s")))
        row.append(_f(e.get("bf16_vs_fp32", {}).get("min_cos"), "{:.6f}"))
        row.append(_f(e.get("other_load", {}).get("other_fraction"), "{:.0%}"))
        rows.append(row)
        notes.append(f"{modality} = {e['inputs']}")
        if "error" in e:
            notes.append(f"!! {modality}: {e['error'].splitlines()[0]}")
    lines.append(_table(header, rows))
    lines.append("    items/s are per item (a video, an audio file); a video is 15 two-frame clips through the vision "
                 "tower, an audio file 3 clips.\n    others' CPU = share of the machine other processes took while "
                 "the row was measured (above ~5%, its figures are noisy)."
                 "\n    inputs: " + "; ".join(n for n in notes if not n.startswith("!!")))
    lines += [f"    {n}" for n in notes if n.startswith("!!")]
    if ib.get("skipped_precisions"):
        lines.append(f"    not run: {', '.join(ib['skipped_precisions'])}, which this CPU only emulates "
                     "(slower than fp32 on these towers)")
    other = ib.get("other_load")
    if other:
        lines.append(f"    other processes used {other['other_fraction']:.0%} of the machine's CPU during (d), "
                     f"which took {other['wall_s']:.0f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------- files

def _clean(obj):
    """JSON without NaN/inf (as null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_clean(result), indent=2) + "\n")
    tmp.replace(path)


def plot(result: dict, path: Path) -> bool:
    svc = result.get("service")
    if not svc or not svc.get("servers"):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {REFERENCE: {"color": "tab:gray", "marker": "o", "label": "reference (Weaviate-style transformers)"},
              OURS: {"color": "tab:blue", "marker": "o", "label": "handspring (default)"}}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, modality in zip(axes, ("image", "text")):
        for name, srv in svc["servers"].items():
            points = sorted((int(c), p["req_per_s"]) for c, p in srv.get("load", {}).get(modality, {}).items())
            if not points:
                continue
            style = styles.get(name, {"color": "tab:orange", "marker": "D", "label": name.replace("_", " ")})
            xs, ys = zip(*points)
            ax.plot(xs, ys, linestyle="-" if len(points) > 1 else "none", **style)
        ref, ours = ({int(c): p["req_per_s"] for c, p in svc["servers"].get(n, {}).get("load", {}).get(modality, {}).items()}
                     for n in (REFERENCE, OURS))
        for c in sorted(set(ref) & set(ours)):
            if ref[c] > 0:
                ax.annotate(f"{ours[c] / ref[c]:.1f}x", (c, ours[c]), textcoords="offset points", xytext=(0, 7),
                            ha="center", fontsize=8, color="tab:blue")
        ax.set_xscale("log", base=2)
        ax.set_xticks(svc["concurrency"], [str(c) for c in svc["concurrency"]])
        top = max((p["req_per_s"] for srv in svc["servers"].values()
                   for p in srv.get("load", {}).get(modality, {}).values()), default=1.0)
        ax.set_ylim(0, top * 1.15)
        ax.set_xlabel("concurrent clients (one object per request)")
        ax.set_ylabel("requests/s")
        ax.set_title(f"{modality}s" + (" (JPEG photos 0.1-12 MP)" if modality == "image" else " (captions)"))
        ax.grid(alpha=0.3)
    meta = result["meta"]
    fig.suptitle(f"Throughput vs concurrency, same weights, same machine ({meta['cores']} cores)"
                 + ("  [QUICK mode: tiny model]" if meta["quick"] else ""), fontsize=10)
    handles: dict = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
