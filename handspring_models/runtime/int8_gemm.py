"""The int8 kernel (``native/int8_gemm.c``, in the same library as the panel kernel), loaded with
ctypes: a linear layer with its weight quantized per output channel (symmetric, int8) at load time
and its input quantized per row (asymmetric, uint8) on every call, summed exactly in int32 by
AVX512-VNNI's ``vpdpbusd`` and scaled back to fp32:

    y[m, n] = float(sum_k u[m, k] q[n, k] - z_m sum_k q[n, k]) * (s_m * s_n) + b[n]

with ``x[m] ~ s_m (u[m] - z_m)`` over the row's own range (which always holds 0) and
``w[n] ~ s_n q[n]``. An approximation of the fp32 layer, not the same maths: ``precision="int8"``
is opt-in. It runs only where ``available()``: the library is built and the CPU has AVX-512 and
AVX512-VNNI.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import torch

from . import panel_gemm
from .panel_gemm import ACTIVATIONS, PANEL, pointer

GROUP = 4  # k values per int32 lane of vpdpbusd


@functools.lru_cache(maxsize=1)
def _entry():
    return panel_gemm.entry("int8_linear_avx512", [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 3
                            + [ctypes.c_int, ctypes.c_int, ctypes.c_void_p], ctypes.c_int)


@functools.lru_cache(maxsize=1)
def _quantizer():
    return panel_gemm.entry("int8_quantize_weight", [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
                            + [ctypes.c_void_p] * 3 + [ctypes.c_int])


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether the int8 kernel runs here: the library is built, the CPU has AVX-512 (as PyTorch
    reports it, CPU and OS) and AVX512-VNNI."""
    vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)  # PyTorch's probe of AVX512-VNNI
    return panel_gemm.native_isa() == "avx512" and bool(vnni()) and _entry() is not None


@dataclass(frozen=True, eq=False)
class Int8Weight:
    """A ``[out, in]`` linear weight quantized for the kernel (``quantize``)."""

    panels: torch.Tensor  # int8 [out / 16, ceil(in / 4), 64]: 4 k of a panel's 16 columns per row
    scale: torch.Tensor  # float32 [out]: s_n
    sums: torch.Tensor  # int32 [out]: sum_k q[n, k]
    in_features: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.scale.shape[0], self.in_features)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.panels, self.scale, self.sums))


def fits(weight: torch.Tensor) -> bool:
    """Whether ``weight`` ([out, in], floating point) can be quantized: out a multiple of ``PANEL``."""
    return (weight.is_floating_point() and weight.dim() == 2 and weight.shape[1] > 0
            and weight.shape[0] > 0 and weight.shape[0] % PANEL == 0)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, K]`` -> (q int8 [N, K], s float32 [N]): w[n] ~ s[n] q[n], q in [-127, 127], per channel
    by its largest magnitude (a channel of zeros gets s = 1)."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8), scale


def quantize(weight: torch.Tensor) -> Int8Weight:
    """``[N, K]`` weight -> ``Int8Weight``, k zero-padded to a multiple of 4: ``quantize_weight``'s
    values, laid out for the kernel. The library's C version does it in one pass per channel (the
    same bits: tested), a second or more off the load of a model; PyTorch's where it is not built."""
    n, k = weight.shape
    k4 = -(-k // GROUP) * GROUP
    panels = torch.empty(n // PANEL, k4 // GROUP, PANEL * GROUP, dtype=torch.int8)
    fast = _quantizer()
    if fast is not None:
        w = weight.detach().float().contiguous()
        scale, sums = torch.empty(n), torch.empty(n, dtype=torch.int32)
        fast(w.data_ptr(), n, k, panels.data_ptr(), scale.data_ptr(), sums.data_ptr(), torch.get_num_threads())
        return Int8Weight(panels, scale, sums, k)
    q, scale = quantize_weight(weight)
    padded = torch.zeros(n, k4, dtype=torch.int8)
    padded[:, :k] = q
    panels.copy_(padded.reshape(n // PANEL, PANEL, k4 // GROUP, GROUP).permute(0, 2, 1, 3).reshape(panels.shape))
    return Int8Weight(panels, scale.contiguous(), q.sum(dim=1, dtype=torch.int32), k)


def dequantize(weight: Int8Weight) -> torch.Tensor:
    """The fp32 ``[N, K]`` weight the kernel multiplies by: s[n] q[n]."""
    panels, groups, _ = weight.panels.shape
    q = weight.panels.reshape(panels, groups, PANEL, GROUP).permute(0, 2, 1, 3).reshape(panels * PANEL, groups * GROUP)
    return q[:, :weight.in_features].float() * weight.scale[:, None]


def linear(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None, activation: str | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """The int8 layer (see the module's docstring) for fp32 ``x`` of any leading shape, then
    ``activation`` and ``+ residual`` as ``panel_gemm.linear`` does."""
    entry = _entry() if available() else None
    if entry is None:
        raise RuntimeError("the int8 kernel is not available here (it needs AVX-512 and AVX512-VNNI)")
    n, k = weight.shape
    x, bias, residual = panel_gemm.checked_inputs("int8", torch.float32, x, n, k, bias, activation, residual)
    y = x.new_empty(*x.shape[:-1], n)
    rows = x.numel() // k
    if rows and entry(x.data_ptr(), weight.panels.data_ptr(), weight.scale.data_ptr(), weight.sums.data_ptr(),
                      pointer(bias), y.data_ptr(), rows, n, k, torch.get_num_threads(), ACTIVATIONS[activation],
                      pointer(residual)):
        raise MemoryError(f"the int8 kernel could not allocate {rows} x {k} bytes for its quantized rows")
    return y
