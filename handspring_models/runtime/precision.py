"""Numeric precision modes and what this CPU can run natively.

- ``fp32``: the exact mode; matches the reference to float rounding, decoding included.
- ``bf16``: weights and activations in bfloat16 (float32 accumulation inside the kernels) and
  JPEG draft decoding for large photos. Only chosen where the CPU has native bf16 (AVX512-BF16
  or AMX): elsewhere bf16 is emulated and slower than fp32.
- ``int8``: opt-in, on CPUs with AVX512-VNNI. The model's linear layers run on the int8 kernel
  (``int8_gemm``: weights per output channel, activations per token), except the ones the model
  keeps precise (``INT8_KEEPS_PRECISE``); everything else runs in fp32, and large JPEGs are
  draft-decoded as in ``bf16``. An approximation, measured at cosine >= 0.999 against fp32 on
  random weights (the README says how far that carries). Models without that attribute refuse it.
- ``auto`` (default): ``bf16`` where native, else ``fp32``. Never ``int8``.
"""

from __future__ import annotations

import functools

import torch

from . import int8_gemm

PRECISIONS = ("auto", "fp32", "bf16", "int8")
# The dtype of the weights loaded and of the activations between layers.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}


class PrecisionUnavailableError(ValueError):
    """The requested precision cannot run on this CPU or build."""


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
    if precision == "int8" and not int8_gemm.available():
        raise PrecisionUnavailableError(
            "precision int8 needs a CPU with AVX-512 and AVX512-VNNI (Intel Xeon from Cascade Lake on, "
            "AMD from Zen 4 on) and the package's compiled kernels; use fp32, bf16 or auto")
    return precision
