"""Numeric precision modes and what this CPU can run natively.

- ``fp32``: the exact mode; matches the reference to float rounding, decoding included.
- ``bf16``: weights and activations in bfloat16 (float32 accumulation inside the kernels) and
  JPEG draft decoding for large photos. Only chosen where the CPU has native bf16 (AVX512-BF16
  or AMX): elsewhere bf16 is emulated and slower than fp32.
- ``auto`` (default): ``bf16`` where native, else ``fp32``.
"""

from __future__ import annotations

import functools

import torch

PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """AVX512-BF16 or AMX, as PyTorch's own CPU probe sees them."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve(precision: str) -> str:
    """The mode that will actually run for a requested one."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return precision
