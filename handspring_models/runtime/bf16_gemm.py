"""The bf16 panel kernel (``native/bf16_gemm.c``, in the same library as the fp32 one), loaded with
ctypes: ``y = x W^T + b`` with bf16 inputs, weights and outputs and fp32 sums (AVX512-BF16's
``vdpbf16ps``), then the activation and the residual on the fp32 sums, and one rounding to bf16.
PyTorch's bf16 operators (oneDNN's product, then each elementwise step) round after every step, so
the two differ by a few bf16 ulps, this one being the closer to fp32.

It runs where ``available()``: the library is built and the CPU has AVX-512 and AVX512-BF16.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from . import panel_gemm
from .panel_gemm import ACTIVATIONS, PANEL, pointer

PAIR = 2  # k values per fp32 lane of vdpbf16ps


@functools.lru_cache(maxsize=1)
def _entry():
    return panel_gemm.entry("bf16_linear_avx512", [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3
                            + [ctypes.c_int, ctypes.c_int, ctypes.c_void_p])


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether the kernel runs here: the library is built, the CPU has AVX-512 (as PyTorch reports it,
    CPU and OS) and AVX512-BF16."""
    bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return panel_gemm.native_isa() == "avx512" and bool(bf16()) and _entry() is not None


def fits(weight: torch.Tensor) -> bool:
    """Whether ``weight`` ([out, in]) can be packed: bf16, out a multiple of ``PANEL``, in even."""
    return (weight.dtype == torch.bfloat16 and weight.dim() == 2 and weight.shape[1] > 0
            and weight.shape[1] % PAIR == 0 and weight.shape[0] > 0 and weight.shape[0] % PANEL == 0)


def pack(weight: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` -> ``[N / 16, K / 2, 16, 2]``: panel p holds output columns 16p..16p+15, two k at a
    time."""
    n, k = weight.shape
    return weight.detach().reshape(n // PANEL, PANEL, k // PAIR, PAIR).permute(0, 2, 1, 3).contiguous()


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """The ``[N, K]`` weight back from ``pack``."""
    panels, pairs, _, _ = packed.shape
    return packed.permute(0, 2, 1, 3).reshape(panels * PANEL, pairs * PAIR)


def is_packed(weight: torch.Tensor) -> bool:
    return (weight.dim() == 4 and weight.dtype == torch.bfloat16 and tuple(weight.shape[2:]) == (PANEL, PAIR)
            and not weight.is_mkldnn)


def linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, unpack(packed), bias)`` for bf16 ``x`` of any leading shape, then ``activation``,
    then ``+ residual``, rounded to bf16 once (see the module's docstring)."""
    entry = _entry() if available() else None
    if entry is None:
        raise RuntimeError("the bf16 panel kernel is not available here (it needs AVX-512 and AVX512-BF16)")
    panels, pairs, _, _ = packed.shape
    n, k = panels * PANEL, pairs * PAIR
    x, bias, residual = panel_gemm.checked_inputs("bf16 panel", torch.bfloat16, x, n, k, bias, activation, residual)
    y = x.new_empty(*x.shape[:-1], n)
    rows = x.numel() // k
    if rows:
        entry(x.data_ptr(), packed.data_ptr(), pointer(bias), y.data_ptr(), rows, n, k, torch.get_num_threads(),
              ACTIVATIONS[activation], pointer(residual))
    return y
