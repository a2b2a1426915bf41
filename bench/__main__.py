"""python -m bench [--quick] [--duration S] [--concurrency 1,2,4,8] [--clients 4] [--precision fp32,bf16]
                [--skip-server] [--skip-model] [--skip-fidelity] [--skip-imagebind] [--skip-catalog]
                [--catalog-models M1,M2] [--skip-peers] [--peers-backends torch,openvino] [--results DIR]

Side by side on this machine: Handspring's service against a Weaviate-style transformers
reference (started by the benchmark, one server at a time), the model alone against
transformers, and fidelity per precision; then ImageBind's throughput per modality (no reference
can run here); then the catalog: every model against its reference library, the model alone; then the peers: the model alone against ONNX Runtime and OpenVINO on the same
weights. Writes RESULTS/bench.json, RESULTS/peers.md and RESULTS/throughput.png.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from . import inputs as bench_inputs
from . import load, report
from .servers import REPO, RunningServer, ServerFailed, handspring_spec, reference_spec

DEFAULT_RESULTS = REPO / "bench" / "results"


_T0 = time.perf_counter()


def log(msg: str = "") -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _strs(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1].strip())
    p.add_argument("--quick", action="store_true",
                   help="tiny model, two small photo sizes, 0.5 s per load point: proves it works (CI), numbers mean nothing")
    p.add_argument("--duration", type=float, help="seconds per load point (default 15; quick 0.5)")
    p.add_argument("--concurrency", type=_ints, help="client counts for the throughput curve (default 1,2,4,8; quick 1,4)")
    p.add_argument("--clients", type=int, default=4, help="the Weaviate-like load: concurrent clients for the headline (4)")
    p.add_argument("--precision", type=_strs, default=["fp32", "bf16"],
                   help="precisions for the model and fidelity sections, and extra HANDSPRING_PRECISION servers "
                        "(default fp32,bf16; fp32 always included)")
    p.add_argument("--starts", type=int, help="process starts timed per server; the median is reported (default 3; quick 1)")
    p.add_argument("--single", type=int, help="sequential requests for single-text latency (default 100; quick 5)")
    p.add_argument("--model-size", choices=["full", "tiny"], help="checkpoint size (default full; quick tiny)")
    p.add_argument("--skip-server", action="store_true", help="skip (a), the servers")
    p.add_argument("--backends", type=_strs,
                   help="Handspring backends served in (a) beside the default torch one (default torch,openvino; "
                        "quick: torch, as (f) and the tests cover the openvino backend)")
    p.add_argument("--skip-model", action="store_true", help="skip (b), the model alone")
    p.add_argument("--skip-fidelity", action="store_true", help="skip (c), in-process fidelity")
    p.add_argument("--skip-imagebind", action="store_true",
                   help="skip (d), ImageBind per modality (full size: ~4-5 min on 2 idle cores)")
    p.add_argument("--skip-catalog", action="store_true",
                   help="skip (e), every model of the registry against its reference (full size: minutes per model)")
    p.add_argument("--catalog-models", type=_strs,
                   help="the models for (e) (default: every model with a reference; quick: clip_vit_b_16, tiny)")
    p.add_argument("--skip-peers", action="store_true",
                   help="skip (f), the model alone against ONNX Runtime and OpenVINO on the same weights")
    p.add_argument("--peers-backends", type=_strs, default=["torch", "openvino"],
                   help="Handspring backends timed in (f) (default torch,openvino; torch, the baseline, always runs)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="output folder (default bench/results)")
    a = p.parse_args(argv)
    a.duration = a.duration if a.duration is not None else (0.5 if a.quick else 15.0)
    a.concurrency = a.concurrency or ([1, 4] if a.quick else [1, 2, 4, 8])
    if a.clients not in a.concurrency:
        a.concurrency = sorted({*a.concurrency, a.clients})
    a.single = a.single if a.single is not None else (5 if a.quick else 100)
    a.starts = max(1, a.starts if a.starts is not None else (1 if a.quick else 3))
    a.model_size = a.model_size or ("tiny" if a.quick else "full")
    a.backends = a.backends or (["torch"] if a.quick else ["torch", "openvino"])
    unknown = [b for b in a.peers_backends if b not in ("torch", "openvino")]
    if unknown:
        p.error(f"--peers-backends: unknown backend {', '.join(unknown)} (choose from torch, openvino)")
    return a


class CpuAccount:
    """How much CPU other processes on the machine took while we measured: system-wide busy time
    minus this process's and its (reaped) children's. On a shared machine that is the noise."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float, float]:
        import resource

        import psutil

        t = psutil.cpu_times()
        busy = sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        return time.monotonic(), busy, ours, getattr(t, "steal", 0.0)

    def read(self) -> dict:
        t1, busy1, ours1, steal1 = self._snapshot()
        t0, busy0, ours0, steal0 = self.start
        wall = max(t1 - t0, 1e-9)
        cores = os.cpu_count() or 1
        other = max(0.0, (busy1 - busy0) - (ours1 - ours0))
        return {"wall_s": wall, "ours_cpu_s": ours1 - ours0, "other_cpu_s": other,
                "other_cores": other / wall, "other_fraction": other / (wall * cores),
                "steal_fraction": max(0.0, steal1 - steal0) / (wall * cores)}


def machine_meta(args) -> dict:
    import psutil
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, check=False,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, check=False, text=True, timeout=5).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", []
    from handspring_models.runtime.precision import native_bf16, resolve

    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick, "checkpoint": args.model_size, "git_commit": commit,
        "git_modified": [line[3:] for line in dirty if line.strip()],
        "cpu": cpu, "cores": os.cpu_count(), "mem_gb": psutil.virtual_memory().total / 2**30,
        "native_bf16": native_bf16(), "auto_resolves_to": resolve("auto"),
        "loadavg_start": list(os.getloadavg()),
        "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def _prewarm(ckpt) -> None:
    """Put both servers' files in the page cache and their imports' files too, so neither start-up
    pays for a cold disk the other does not."""
    for folder in (ckpt.hf_dir, ckpt.weights_dir):
        for f in folder.rglob("*"):  # the weights folder may hold a backend's cache (openvino/)
            if not f.is_file():
                continue
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass
    imports = "import torch, transformers, fastapi, uvicorn, PIL, numpy, safetensors; from transformers import CLIPModel"
    subprocess.run([sys.executable, "-c", imports], cwd=REPO, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_servers(args, ckpt, photos, captions) -> tuple[dict, dict]:
    from handspring_models.runtime.precision import resolve

    specs = [reference_spec(ckpt.hf_dir), handspring_spec(ckpt.weights_dir)]
    default = resolve("auto")
    extra = ["fp32"] + [p for p in args.precision if p not in ("auto", "fp32") and resolve(p) != default]
    specs += [handspring_spec(ckpt.weights_dir, p) for p in dict.fromkeys(extra)]
    if "openvino" in args.backends:
        specs.append(handspring_spec(ckpt.weights_dir, backend="openvino"))
        # The conversion is paid once per weights folder (cached beside it), not at every start:
        # pay it here, timed, so the starts below measure what a restart costs.
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "handspring_models.weights", "compile", str(ckpt.weights_dir),
                        "--backend", "openvino"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        log(f"  openvino backend: towers converted and cached in {time.perf_counter() - started:.1f} s "
            f"(once per weights folder; a cached conversion takes a second)")

    image_bodies = [load.image_body(p.data) for p in photos]
    text_bodies = [load.text_body(t) for t in captions]
    log_dir = args.results / "logs"
    servers: dict = {}
    answers: dict = {}
    if not (REPO / "app" / "main.py").is_file():
        log("!! app/main.py does not exist yet: only the reference server can run")
    if not args.quick:
        log("  pre-warming the page cache and imports ...")
        _prewarm(ckpt)
    for spec in specs:
        log(f"  starting {spec.name} ...")
        # Start-up varies by a few hundred ms from one start to the next on a small VM: time a few
        # starts (each one stopped again) and keep the median; the last start is the one measured.
        extra_starts = []
        for _ in range(args.starts - 1):
            try:
                with RunningServer(spec, log_dir) as probe:
                    extra_starts.append(probe.ready_s)
            except ServerFailed:
                break
        account = CpuAccount()
        try:
            server = RunningServer(spec, log_dir)
        except ServerFailed as e:
            log(f"!! {e}")
            servers[spec.name] = {"label": spec.label, "error": str(e)}
            continue
        entry: dict = {"label": spec.label, "argv": spec.argv, "env": spec.env, "log": str(server.log_path),
                       "load": {"image": {}, "text": {}}}
        try:
            with server:
                starts = [*extra_starts, server.ready_s]
                entry["ready_s_all"] = starts
                entry["ready_s"] = statistics.median(starts)
                entry["rss_at_ready_mb"] = server.rss_at_ready / 2**20
                if spec.name != "reference" and isinstance(server.meta, dict):
                    entry["meta"] = server.meta
                log(f"    ready in {entry['ready_s']:.2f} s (median of {', '.join(f'{x:.2f}' for x in starts)}), "
                    f"{entry['rss_at_ready_mb']:.0f} MB")
                # every input once (fidelity; also warms the server up), then lone texts, then the load
                answers[spec.name] = load.vectors(server.url, captions, [p.data for p in photos])
                entry["single_text"] = load.sequential(server.url, text_bodies, "textVectors", args.single)
                log(f"    single text alone: median {entry['single_text']['p50_ms']:.1f} ms")
                main_only = spec.name not in ("reference", "handspring")
                for modality, bodies, field in (("image", image_bodies, "imageVectors"),
                                                ("text", text_bodies, "textVectors")):
                    for c in ([args.clients] if main_only else args.concurrency):
                        point = load.run_load(server.url, bodies, field, c, duration=args.duration)
                        entry["load"][modality][str(c)] = point
                        log(f"    {modality:5s} x{c}: {point['req_per_s']:7.2f} req/s  p50 {point['p50_ms']:7.1f} ms  "
                            f"p99 {point['p99_ms']:7.1f} ms  client {point['client_cores']:.2f} cores  "
                            f"({point['requests']} requests"
                            + (f", {point['errors']} errors: {point['first_error']})" if point["errors"] else ")"))
        except Exception as e:  # noqa: BLE001  (keep what was measured, say what broke)
            log(f"!! {spec.name} failed: {type(e).__name__}: {e}\n{server.log_tail()}")
            entry["error"] = f"{type(e).__name__}: {e}"
        entry["peak_rss_mb"] = server.peak_rss / 2**20
        entry["peak_rss_sampled_mb"] = server.peak_tree_rss / 2**20
        entry["vm_hwm_mb"] = server.hwm / 2**20
        entry["other_load"] = account.read()
        log(f"    peak RSS {entry['peak_rss_mb']:.0f} MB; other processes used "
            f"{entry['other_load']['other_fraction']:.0%} of the machine meanwhile")
        servers[spec.name] = entry
    return servers, answers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    args.results.mkdir(parents=True, exist_ok=True)
    cache = args.results / "cache"
    from .checkpoint import ensure_checkpoint
    from .model_bench import precisions_to_run

    account = CpuAccount()
    result: dict = {"meta": machine_meta(args)}
    precisions = precisions_to_run(args.precision)
    log(f"bench: {'QUICK ' if args.quick else ''}{args.model_size} checkpoint, precisions {precisions}, "
        f"load avg {os.getloadavg()[0]:.2f}")
    ckpt = ensure_checkpoint(cache, args.model_size, log=log)
    result["checkpoint"] = {"size": ckpt.size, "seed": ckpt.seed, "hf_dir": str(ckpt.hf_dir),
                            "weights_dir": str(ckpt.weights_dir)}
    photos = bench_inputs.photos(cache, args.quick)
    captions = bench_inputs.captions(args.quick)
    failed = False

    answers = {}
    if not args.skip_server:
        log("(a) service, one server at a time")
        servers, answers = run_servers(args, ckpt, photos, captions)
        result["service"] = {
            "clients": args.clients, "concurrency": args.concurrency, "duration_s": args.duration,
            "photos": f"{len(photos)} JPEGs, {min(p.megapixels for p in photos):.2f}-{max(p.megapixels for p in photos):.0f} MP",
            "texts": len(captions), "single_text_requests": args.single, "servers": servers,
        }
        result["service"]["summary"] = report.service_summary(servers, args.clients)
        failed |= any("error" in s for s in servers.values())

    if not args.skip_model:
        log("(b) model alone")
        from . import model_bench

        result["model"] = model_bench.run(ckpt, precisions, cache, args.quick, log=lambda m: log(m))

    if not args.skip_fidelity:
        log("(c) fidelity")
        from . import fidelity

        result["fidelity"] = fidelity.run(ckpt, precisions, cache, args.quick, log=lambda m: log(m))
    if answers.get("reference"):
        from . import fidelity

        names_t, names_i = captions, [p.name for p in photos]
        service = {n: fidelity.compare(a, answers["reference"], names_t, names_i)
                   for n, a in answers.items() if n != "reference"}
        result.setdefault("fidelity", {})["service"] = service

    if not args.skip_imagebind:
        log("(d) ImageBind alone, per modality")
        from . import imagebind_bench

        ib_account = CpuAccount()
        result["imagebind"] = imagebind_bench.run(cache, precisions, args.quick, size=args.model_size,
                                                  log=lambda m: log(m), cpu_account=CpuAccount)
        result["imagebind"]["other_load"] = ib_account.read()
        failed |= any("error" in e for e in result["imagebind"]["modalities"].values())

    if not args.skip_catalog:
        log("(e) the catalog, the model alone against each model's reference")
        from . import catalog

        models = args.catalog_models or (["clip_vit_b_16"] if args.quick else None)
        result["catalog"] = catalog.run(cache, precisions, args.quick, models, log=lambda m: log(m))
        failed |= any("error" in e for e in result["catalog"]["models"].values())

    if not args.skip_peers:
        log("(f) peers: the model alone against ONNX Runtime and OpenVINO, same weights and inputs")
        from . import peers

        try:
            result["peers"] = peers.run(ckpt, precisions, cache, args.quick, args.peers_backends, log=lambda m: log(m))
        except Exception as e:  # noqa: BLE001 - keep the other sections' results, say what broke
            log(f"!! peers failed: {type(e).__name__}: {e}")
            result["peers"] = {"error": f"{type(e).__name__}: {e}"}
        failed |= "error" in result["peers"]
        (args.results / "peers.md").write_text(peers.markdown(result["peers"]) + "\n")

    result["targets"] = report.targets(result)
    result["meta"]["elapsed_s"] = time.perf_counter() - t_start
    result["meta"]["loadavg_end"] = list(os.getloadavg())
    result["meta"]["other_load"] = account.read()
    json_path = args.results / "bench.json"
    report.write_json(result, json_path)
    plotted = report.plot(result, args.results / "throughput.png")
    print(report.format_report(result))
    print(f"\nwrote {json_path}" + (f" and {args.results / 'throughput.png'}" if plotted else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
