"""Self-attention on the library's attention kernel (``native/attention.c``), loaded with ctypes:
``softmax(q k^T / sqrt(dh)) v`` per head, read straight from a fused q/k/v projection's output
``[b, n, 3 d]`` and written as the output projection's input ``[b, n, d]``, in fp32 or bf16 with
fp32 sums. Saves PyTorch's attention the two transposing copies around it, and is faster than its
CPU kernel at CLIP's lengths. Runs where ``available()``: the library is built and the CPU has AVX2
(the library's two builds, as ``panel_gemm.isa()`` picks them); elsewhere the models call
``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from . import panel_gemm


@functools.lru_cache(maxsize=None)
def _entry(isa: str):
    return panel_gemm.entry(f"attention_{isa}", [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 4 + [ctypes.c_int] * 3,
                            ctypes.c_int)


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether the kernel runs here: the library is built (with it) and the CPU has AVX2 or AVX-512."""
    isa = panel_gemm.native_isa()
    return isa is not None and _entry(isa) is not None


def fits(qkv: torch.Tensor, heads: int) -> bool:
    """Whether the kernel takes ``qkv`` ([b, n, 3 d], fp32 or bf16) split into ``heads`` heads: the
    head width a multiple of 16 (one register)."""
    if qkv.dim() != 3 or qkv.dtype not in (torch.float32, torch.bfloat16) or heads < 1:
        return False
    width, rest = divmod(qkv.shape[-1], 3 * heads)
    return rest == 0 and width > 0 and width % 16 == 0


def self_attention(qkv: torch.Tensor, heads: int, causal: bool = False) -> torch.Tensor:
    """``qkv`` [b, n, 3 d] (q, k, v, each ``heads`` heads of ``d / heads``) -> [b, n, d]: the
    heads' attention outputs side by side, as ``F.scaled_dot_product_attention`` gives them after
    the usual transposes; ``causal``: each position attends to itself and the ones before it."""
    if not available():
        raise RuntimeError("the attention kernel is not available here (it needs AVX2)")
    if not fits(qkv, heads):
        raise ValueError(f"the attention kernel takes [b, n, 3 d] fp32 or bf16 with d / heads a multiple of 16, "
                         f"not {tuple(qkv.shape)} {qkv.dtype} in {heads} heads")
    qkv = qkv.contiguous()
    b, n, width3 = qkv.shape
    out = qkv.new_empty(b, n, width3 // 3)
    if out.numel() and _entry(panel_gemm.isa())(qkv.data_ptr(), out.data_ptr(), b, n, heads, width3 // 3 // heads,
                                int(qkv.dtype == torch.bfloat16), int(causal), torch.get_num_threads()):
        raise MemoryError(f"the attention kernel could not allocate its scratch for {n} tokens")
    return out
