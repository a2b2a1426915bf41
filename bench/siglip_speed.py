"""SigLIP's model alone, in this process: our towers against transformers' ``SiglipModel`` on the
same random full-size weights and the same inputs; images/s and texts/s per batch size and
precision, and the bf16 vectors' cosine against fp32.

    .venv/bin/python -m bench.siglip_speed --model so400m_384 --image-batches 1,4 --text-batches 1,32
    .venv/bin/python -m bench.siglip_speed --model base_224

``make bench``'s catalog (section (e), ``--catalog-models siglip2_base_patch16_224``) times the same
comparison at batch 1 and 32; this script adds the bf16-vs-fp32 cosine, other batch sizes, and
CPU seconds per item (``--threads 1`` on a shared machine, where wall time says little). Times are
medians after a warm-up.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings

import numpy as np
import torch

# The published shapes (transformers' config names), for the random weights both sides load.
SHAPES = {
    "so400m_384": dict(  # google/siglip-so400m-patch14-384
        text_config=dict(vocab_size=32000, hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                         num_attention_heads=16, max_position_embeddings=64),
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                           image_size=384, patch_size=14)),
    "siglip2_so400m_384": dict(  # google/siglip2-so400m-patch16-384
        text_config=dict(vocab_size=256000, hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                         num_attention_heads=16, max_position_embeddings=64),
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                           image_size=384, patch_size=16)),
    "base_224": dict(  # google/siglip2-base-patch16-224
        text_config=dict(vocab_size=256000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=64),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=16)),
}


def timeit(fn, reps: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) per call. On a shared machine the
    CPU seconds are the steadier figure: threads waiting for a core do not count."""
    fn()  # warm-up: oneDNN picks its kernels on the first call of a shape
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def build(shape: dict):
    from transformers import SiglipConfig, SiglipModel

    from handspring_models.siglip import checkpoint
    from handspring_models.siglip.model import SigLIP

    config = checkpoint.config_from_hf({"model_type": "siglip", **shape})
    state = checkpoint.random_state_dict(config, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            reference = SiglipModel(SiglipConfig(**shape))
    reference.load_state_dict(state, strict=False, assign=True)  # position_ids buffers stay as built
    reference = reference.eval().requires_grad_(False)
    with torch.device("meta"):
        ours = SigLIP(config)
    ours.load_state_dict(state, strict=True, assign=True)
    return config, ours.eval().requires_grad_(False), reference


def ours_at(model, dtype: torch.dtype):
    from handspring_models.runtime.kernels import pack_linear_weights

    model = copy.deepcopy(model).to(dtype)
    pack_linear_weights(model)
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.siglip_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(SHAPES), default="base_224")
    p.add_argument("--image-batches", default="1,4")
    p.add_argument("--text-batches", default="1,32")
    p.add_argument("--precision", default="fp32,bf16")
    p.add_argument("--bf16-image-batches", help="image batch sizes for bf16 (default: --image-batches); bf16 is "
                                                "emulated, and slow, on CPUs without AVX512-BF16 or AMX")
    p.add_argument("--bf16-text-batches", help="text batch sizes for bf16 (default: --text-batches)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--skip-reference", action="store_true", help="ours only")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's). On a shared machine, 1 thread's "
                                               "CPU seconds are the honest figure: OpenMP threads spin while "
                                               "waiting for a descheduled sibling, which inflates wall and CPU time")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config, ours_fp32, reference = build(SHAPES[args.model])
    size = config.vision.image_size
    import os

    results = {"model": args.model, "threads": torch.get_num_threads(), "load_average": os.getloadavg(), "rows": []}
    first: dict[str, np.ndarray] = {}
    for precision in args.precision.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        ours = ours_at(ours_fp32, dtype)
        ref = None if args.skip_reference else (reference if dtype == torch.float32 else copy.deepcopy(reference).to(dtype))
        if precision == "bf16":
            batch_sizes = (("image", args.bf16_image_batches or args.image_batches),
                           ("text", args.bf16_text_batches or args.text_batches))
        else:
            batch_sizes = (("image", args.image_batches), ("text", args.text_batches))
        for modality, batches in batch_sizes:
            if not batches:
                continue
            for b in (int(x) for x in batches.split(",")):
                gen = torch.Generator().manual_seed(b)
                if modality == "image":
                    x = (torch.rand(b, 3, size, size, generator=gen) * 2 - 1).to(dtype)
                    run = lambda: ours.encode_image(x)  # noqa: E731
                    run_ref = lambda: ref.get_image_features(pixel_values=x)  # noqa: E731
                else:
                    x = torch.randint(2, 1000, (b, config.text.context_length), generator=gen)
                    run = lambda: ours.encode_text(x)  # noqa: E731
                    run_ref = lambda: ref.get_text_features(input_ids=x)  # noqa: E731
                with torch.inference_mode():
                    t_ours, c_ours = timeit(run, args.reps)
                    out = run().float().numpy()
                    t_ref, c_ref = timeit(run_ref, args.reps) if ref is not None else (None, None)
                key = f"{modality}{b}"
                row = {"precision": precision, "modality": modality, "batch": b,
                       "ours_per_s": round(b / t_ours, 3), "ours_cpu_s_per_item": round(c_ours / b, 4),
                       "transformers_per_s": round(b / t_ref, 3) if t_ref else None,
                       "transformers_cpu_s_per_item": round(c_ref / b, 4) if c_ref else None}
                if precision == "fp32":
                    first[key] = out
                elif key in first:
                    a = first[key]
                    row["cosine_vs_fp32_min"] = float(((a * out).sum(-1) / np.linalg.norm(a, axis=-1)
                                                       / np.linalg.norm(out, axis=-1)).min())
                results["rows"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
