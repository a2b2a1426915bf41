"""The benchmark runs end to end (``python -m bench --quick``: tiny model, a few requests) and
writes a complete, sane bench.json and a plot. No timing is asserted: it is a benchmark, not a test."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from handspring_models.runtime import int8_gemm
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _numbers(obj, path=""):
    """(path, value) for every number in a JSON tree (booleans excluded)."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")


def _positive_finite(obj, path):
    found = list(_numbers(obj, path))
    assert found, f"no numbers under {path}"
    bad = [(p, v) for p, v in found if not (math.isfinite(v) and v > 0) and not p.endswith(("errors", "gemm_n"))]
    assert not bad, bad[:10]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--results", str(results)], cwd=REPO,
                          check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return results, json.loads((results / "bench.json").read_text()), proc.stdout


def test_quick_writes_json_plot_and_table(quick_run):
    results, data, stdout = quick_run
    assert set(data) >= {"meta", "checkpoint", "service", "model", "fidelity", "imagebind", "catalog", "peers",
                         "targets"}
    assert data["meta"]["quick"] is True
    png = results / "throughput.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for heading in ("(a) SERVICE", "(b) MODEL ALONE", "(c) FIDELITY", "(d) IMAGEBIND", "(e) CATALOG", "(f) PEERS",
                    "TARGETS"):
        assert heading in stdout


def test_service_section(quick_run):
    _, data, _ = quick_run
    svc = data["service"]
    clients = svc["clients"]
    assert set(svc["servers"]) >= {"reference", "handspring", "handspring_fp32"}
    for name, server in svc["servers"].items():
        assert "error" not in server, (name, server.get("error"))
        for key in ("ready_s", "peak_rss_mb", "rss_at_ready_mb"):
            assert math.isfinite(server[key]) and server[key] > 0, (name, key)
        assert server["single_text"]["p50_ms"] > 0
        for modality in ("image", "text"):
            point = server["load"][modality][str(clients)]
            assert point["errors"] == 0, (name, modality, point["first_error"])
            assert point["requests"] > 0
            _positive_finite({k: point[k] for k in ("req_per_s", "p50_ms", "p99_ms", "seconds")}, f"{name}.{modality}")
    for name in ("reference", "handspring"):  # the throughput curve: every concurrency
        for modality in ("image", "text"):
            assert set(svc["servers"][name]["load"][modality]) == {str(c) for c in svc["concurrency"]}
    summary = svc["summary"]
    for name in ("handspring", "handspring_fp32"):
        _positive_finite(summary["ratios"][name], f"ratios.{name}")


def test_model_section(quick_run):
    _, data, _ = quick_run
    model = data["model"]
    assert set(model["gemm_peak_gflops"]) == {"fp32", "bf16"}
    _positive_finite(model["gemm_peak_gflops"], "gemm_peak")
    for modality in ("image", "text"):
        rows = model[modality]
        combos = {(r["impl"], r["precision"], r["batch"]) for r in rows}
        assert combos == {(i, p, b) for i in ("transformers", "handspring") for p in ("fp32", "bf16")
                          for b in model["batch_sizes"]}
        for r in rows:
            _positive_finite({k: r[k] for k in ("items_per_s", "ms_per_item", "gflops", "peak_fraction",
                                                "vs_transformers_fp32")}, f"{modality}")
    assert model["preprocess"] and all(r["ms"] > 0 for r in model["preprocess"])


def test_fidelity_and_targets(quick_run):
    _, data, _ = quick_run
    fid = data["fidelity"]
    for key in ("vs_fp32", "vs_transformers", "model_vs_transformers"):
        assert set(fid[key]) == {"fp32", "bf16"}
        for p, f in fid[key].items():
            for modality in ("image", "text"):
                assert 0 < f[modality]["min_cos"] <= 1 + 1e-6, (key, p, modality)
    # fp32 is the exact mode, even on the tiny model; the same answers come back over HTTP
    assert fid["vs_transformers"]["fp32"]["image"]["min_cos"] > 0.99999
    assert fid["vs_transformers"]["fp32"]["text"]["min_cos"] > 0.99999
    assert set(fid["service"]) >= {"handspring", "handspring_fp32"}
    assert fid["service"]["handspring_fp32"]["text"]["min_cos"] > 0.99999
    names = {t["name"] for t in data["targets"]}
    assert {"image throughput vs reference", "text throughput vs reference", "single text alone, median",
            "peak RSS vs reference", "fp32 image throughput vs reference"} <= names
    assert any(name.startswith("model alone, fp32: fastest peer / Handspring") for name in names)
    for t in data["targets"]:
        assert t["value"] is not None and math.isfinite(t["value"]) and t["value"] > 0, t
        assert isinstance(t["met"], bool)


def test_imagebind_section(quick_run):
    _, data, stdout = quick_run
    ib = data["imagebind"]
    assert ib["weights"]["size"] == "tiny"
    assert ib["precisions"] == ["fp32", "bf16"]  # quick mode runs bf16 even where it is emulated
    assert list(ib["modalities"]) == ["text", "image", "video", "audio", "depth", "thermal", "imu"]
    for modality, entry in ib["modalities"].items():
        assert "error" not in entry, (modality, entry.get("error"))
        assert entry["n_inputs"] == max(entry["batch_sizes"]) and entry["mean_input_bytes"] > 0
        assert set(entry["precisions"]) == {"fp32", "bf16"}
        for p, m in entry["precisions"].items():
            assert [b["batch"] for b in m["batches"]] == entry["batch_sizes"], (modality, p)
            for b in m["batches"]:
                _positive_finite({k: b[k] for k in ("ms_per_item", "items_per_s", "e2e_items_per_s")},
                                 f"imagebind.{modality}.{p}.b{b['batch']}")
                assert b["e2e_items_per_s"] < b["items_per_s"]  # end to end includes the model's time
            _positive_finite({"prepare_ms": m["prepare_ms"]}, f"imagebind.{modality}.{p}")
        assert entry["other_load"]["other_fraction"] >= 0
        fid = entry["bf16_vs_fp32"]
        assert fid["n"] == entry["n_inputs"]
        assert 0.99 < fid["min_cos"] <= fid["mean_cos"] <= 1 + 1e-6, (modality, fid)
    table = stdout.split("(d) IMAGEBIND", 1)[1].split("TARGETS", 1)[0]
    assert [line.split()[0] for line in table.splitlines() if line.split()[:1] and line.split()[0] in ib["modalities"]] \
        == list(ib["modalities"])  # one printed row per modality, in order


def test_catalog_section(quick_run):
    """Each measured model has ours and the reference per input, precision and batch; the models
    without a reference here say so."""
    _, data, _ = quick_run
    models = data["catalog"]["models"]
    measured = {name: entry for name, entry in models.items() if "rows" in entry}
    assert set(measured) == {"clip_vit_b_16"}, models
    rows = measured["clip_vit_b_16"]["rows"]
    seen = {(r["modality"], r["precision"], r["batch"]) for r in rows}
    assert seen == {(m, p, b) for m in ("image", "text") for p in data["catalog"]["precisions"]
                    for b in data["catalog"]["batch_sizes"]}
    _positive_finite(rows, "catalog.rows")


PEER_ENGINES = {"handspring_torch_fp32", "handspring_openvino_fp32", "onnxruntime_fp32", "openvino_f32",
                "handspring_torch_bf16", "handspring_openvino_bf16", "openvino_bf16", "handspring_torch_int8",
                "onnxruntime_int8"}


def test_peers_section(quick_run):
    """Every case of the issue's table, every engine either measured (items/s and a cosine against
    Handspring fp32) or skipped with its reason; the fp32 peers give our fp32 vectors."""
    results, data, _ = quick_run
    peers = data["peers"]
    assert "error" not in peers, peers.get("error")
    assert [c["case"] for c in peers["cases"]] == ["image_b1", "image_b4", "text_b1", "text_b4_long", "text_b4_short"]
    long_case = peers["cases"][3]
    assert max(long_case["tokens"]) == 77 and sorted(long_case["tokens"])[-2] < 77  # one 77-token text among short
    engines = peers["engines"]
    assert set(engines) == PEER_ENGINES
    measured = {name for name, e in engines.items() if "skipped" not in e}
    assert {"handspring_torch_fp32", "onnxruntime_fp32", "openvino_f32", "onnxruntime_int8"} <= measured
    if int8_gemm.available():
        assert "handspring_torch_int8" in measured
    for name, e in engines.items():
        if name not in measured:
            assert e["skipped"].startswith("not available: "), (name, e)
            continue
        assert e["ready_s"] > 0 and math.isfinite(e["rss_growth_mb"]) and e["peak_rss_mb"] > 0, (name, e)
        for case in peers["cases"]:
            r = case["results"][name]
            assert r["items_per_s"] > 0 and 0 < r["min_cos"] <= 1 + 1e-6, (name, case["case"], r)
            if e["baseline"] in measured:
                assert r["ratio"] > 0, (name, case["case"])
    for name in ("onnxruntime_fp32", "openvino_f32"):
        assert min(c["results"][name]["min_cos"] for c in peers["cases"]) >= 0.99999, name
    assert peers["export"]["seconds"]["onnx_export_image"] > 0
    table = (results / "peers.md").read_text()
    assert all(f"| {c['label']} |" in table for c in peers["cases"])


def test_peer_targets_take_each_precisions_worst_case_against_its_rivals():
    """A rival faster than Handspring in one case fails its precision's target; Handspring's own
    openvino backend is not a rival, and a precision with no measured rival gets no target."""
    from bench import report

    engines = {"onnxruntime_fp32": {"baseline": "handspring_torch_fp32"},
               "openvino_f32": {"baseline": "handspring_torch_fp32"},
               "handspring_openvino_fp32": {"baseline": "handspring_torch_fp32"},
               "openvino_bf16": {"baseline": "handspring_torch_bf16", "skipped": "not run"}}
    cases = [{"label": "image, batch 1", "results": {"onnxruntime_fp32": {"ratio": 0.8}, "openvino_f32": {"ratio": 0.9},
                                                     "handspring_openvino_fp32": {"ratio": 1.5}}},
             {"label": "text, batch 1", "results": {"onnxruntime_fp32": {"ratio": 1.1}, "openvino_f32": {"ratio": 0.7}}}]
    targets = report.targets({"peers": {"engines": engines, "cases": cases}})
    assert [(t["name"], t["value"], t["met"]) for t in targets] == [
        ("model alone, fp32: fastest peer / Handspring, worst case (text, batch 1)", 1.1, False)]
