"""The fp32 panel kernel (``native/panel_gemm.c``), loaded with ctypes: ``y = x W^T + b`` with ``W``
packed in panels of 16 output columns. Same maths as ``F.linear`` in fp32 (a plain FMA sum over
the input features); faster than oneDNN's kernels for the few rows of a single request, where the
time is spent reading the weights from memory. The library holds an AVX2 and an AVX-512 build of
the kernel, which give the same bits; ``isa()`` says which one runs.

The library is built by ``pip install`` (setup.py) and the Dockerfile, and is optional: ``library()``
is None where it was not built or the CPU lacks AVX2/FMA, and the models then use oneDNN.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

PANEL = 16  # output columns per panel: two AVX2 registers
NATIVE = Path(__file__).with_name("native")
# torch.backends.cpu.get_cpu_capability() -> the library's build of the kernel for it. PyTorch reports
# "AVX512" only where the CPU and the OS support AVX-512 F/BW/VL/DQ, and "AVX2" where AVX2 and FMA.
ISA_FOR_CAPABILITY = {"AVX2": "avx2", "AVX512": "avx512"}
ISAS = ("avx2", "avx512")  # each CPU that runs a build runs the ones before it
# For A/B benchmarks (bench.pack_layout) and tests: "avx2" runs the AVX2 build on an AVX-512 CPU.
# Read per call; a build this CPU cannot run is refused rather than run.
isa_override: str | None = None


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The built kernel, or None where it cannot run here."""
    if torch.backends.cpu.get_cpu_capability() not in ISA_FOR_CAPABILITY:
        return None
    for path in sorted(NATIVE.glob("panel_gemm*.so")):
        try:
            lib = ctypes.CDLL(str(path))  # after torch: its libgomp is the OpenMP runtime this uses
        except OSError:
            continue
        for isa in ISAS:
            fn = getattr(lib, f"panel_linear_{isa}")
            fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
            fn.restype = None
        return lib
    return None


def entry(name: str, argtypes: list, restype=None):
    """The library's function ``name`` with its ctypes signature, or None where it is not built."""
    lib = library()
    fn = getattr(lib, name, None) if lib is not None else None
    if fn is not None:
        fn.argtypes, fn.restype = argtypes, restype
    return fn


@functools.lru_cache(maxsize=1)
def native_isa() -> str | None:
    """The build of the kernel this CPU runs best: "avx512", "avx2", or None (no kernel here)."""
    return None if library() is None else ISA_FOR_CAPABILITY[torch.backends.cpu.get_cpu_capability()]


def isa() -> str | None:
    """The build that runs: ``native_isa()`` unless ``isa_override`` says otherwise."""
    native = native_isa()
    if isa_override is None or native is None:
        return native
    if isa_override not in ISAS or ISAS.index(isa_override) > ISAS.index(native):
        raise ValueError(f"isa_override={isa_override!r}: this CPU runs the {', '.join(ISAS[:ISAS.index(native) + 1])} builds")
    return isa_override


@functools.lru_cache(maxsize=None)
def _entry(isa: str):
    return getattr(library(), f"panel_linear_{isa}")


def fits(weight: torch.Tensor) -> bool:
    """Whether ``weight`` ([out, in]) can be packed: fp32, not empty, out a multiple of ``PANEL``."""
    return (weight.dtype == torch.float32 and weight.dim() == 2 and weight.shape[1] > 0
            and weight.shape[0] > 0 and weight.shape[0] % PANEL == 0)


def pack(weight: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` -> ``[N / 16, K, 16]``: panel p holds output columns 16p..16p+15, k by k."""
    n, k = weight.shape
    return weight.detach().reshape(n // PANEL, PANEL, k).transpose(1, 2).contiguous()


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """The ``[N, K]`` weight back from ``pack``."""
    panels, k, _ = packed.shape
    return packed.transpose(1, 2).reshape(panels * PANEL, k)


def is_packed(weight: torch.Tensor) -> bool:
    return weight.dim() == 3 and weight.shape[-1] == PANEL and not weight.is_mkldnn


# Activations the kernel applies to its outputs while they are in cache (the C side's ACT_*).
ACTIVATIONS = {None: 0, "quick_gelu": 1}


def checked_inputs(kernel: str, dtype: torch.dtype, x: torch.Tensor, n: int, k: int, bias: torch.Tensor | None,
                   activation: str | None, residual: torch.Tensor | None):
    """``(x, bias, residual)`` made contiguous for a kernel of the library that multiplies ``x`` by an
    ``[n, k]`` weight, after checking everything it would otherwise read out of bounds: the C side
    trusts its sizes. ``kernel`` names it in the errors."""
    if x.dtype != dtype or (bias is not None and bias.dtype != dtype):
        raise TypeError(f"the {kernel} kernel takes {dtype} inputs and bias, not {x.dtype}")
    if x.shape[-1] != k or (bias is not None and bias.shape != (n,)):
        raise ValueError(f"shapes {tuple(x.shape)} and bias {None if bias is None else tuple(bias.shape)} "
                         f"do not fit a packed [{n}, {k}] weight")
    if activation not in ACTIVATIONS:
        raise ValueError(f"the {kernel} kernel applies {sorted(a for a in ACTIVATIONS if a)}, not {activation!r}")
    if residual is not None:
        if residual.dtype != dtype:
            raise TypeError(f"the {kernel} kernel takes a {dtype} residual, not {residual.dtype}")
        if residual.shape != (*x.shape[:-1], n):
            raise ValueError(f"a residual of shape {tuple(residual.shape)} does not fit an output of "
                             f"{(*x.shape[:-1], n)}")
        residual = residual.contiguous()
    if not x.is_contiguous():
        x = x.contiguous()
    if bias is not None and not bias.is_contiguous():
        bias = bias.contiguous()
    return x, bias, residual


def pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, unpack(packed), bias)`` for fp32 ``x`` of any leading shape, then ``activation``
    (``"quick_gelu"``: ``z * sigmoid(1.702 z)``), then ``+ residual`` (same shape as the output).
    (Few torch calls: at a single text's size each costs as much as a tenth of the product.)"""
    build = isa()
    if build is None:
        raise RuntimeError("the panel kernel is not available here")
    panels, k, _ = packed.shape
    n = panels * PANEL
    x, bias, residual = checked_inputs("panel", torch.float32, x, n, k, bias, activation, residual)
    y = x.new_empty(*x.shape[:-1], n)
    rows = x.numel() // k
    if rows:
        _entry(build)(x.data_ptr(), packed.data_ptr(), pointer(bias), y.data_ptr(), rows, n, k,
                      torch.get_num_threads(), ACTIVATIONS[activation], pointer(residual))
    return y
