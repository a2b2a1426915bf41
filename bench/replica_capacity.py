"""One replica's capacity: ``python -m app`` (as the image runs it) under Weaviate-style load.

    .venv/bin/python -m bench.replica_capacity --weights DIR [--precision fp32] [--threads 2]
        [--images 48] [--texts 200] [--concurrency 4]

Photos of 0.1-12 MP (bench/inputs.py) then captions, one object per request, ``--concurrency``
clients; prints images/s and texts/s, per thread, and the process's peak RSS (VmHWM and 20 ms
sampling), the figure a Kubernetes memory limit must cover. ``--threads`` sets HANDSPRING_THREADS
(what a CPU limit gives a container).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench import inputs
from bench.load import image_body, run_load, text_body
from bench.servers import RunningServer, handspring_spec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=48, help="image requests")
    p.add_argument("--texts", type=int, default=200, help="text requests")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "handspring-bench-cache")
    args = p.parse_args(argv)

    photos = inputs.photos(args.cache)
    spec = handspring_spec(args.weights, args.precision)
    spec.env.update({"HANDSPRING_THREADS": str(args.threads), "HANDSPRING_PREPROCESS_WORKERS": str(args.threads)})
    with tempfile.TemporaryDirectory() as logs:
        server = RunningServer(spec, Path(logs))
        try:
            images = run_load(server.url, [image_body(ph.data) for ph in photos], "imageVectors", args.concurrency,
                              count=args.images)
            texts = run_load(server.url, [text_body(t) for t in inputs.captions()], "textVectors", args.concurrency,
                             count=args.texts)
        finally:
            server.stop()
    result = {
        "precision": args.precision, "threads": args.threads,
        "images_per_s": round(images["req_per_s"], 2), "images_per_s_per_thread": round(images["req_per_s"] / args.threads, 2),
        "texts_per_s": round(texts["req_per_s"], 2), "texts_per_s_per_thread": round(texts["req_per_s"] / args.threads, 2),
        "errors": images["errors"] + texts["errors"],
        "rss_at_ready_mb": round(server.rss_at_ready / 1e6), "peak_rss_mb": round(server.peak_rss / 1e6),
        "ready_s": round(server.ready_s, 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
