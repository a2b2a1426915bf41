"""CPU kernel choices that change speed, not maths.

PyTorch's eager ``F.linear`` lays the weight out for oneDNN again on every call. Reordering each
weight once, at load time, into oneDNN's blocked layout (what torch.compile's CPU "freezing"
does) makes every linear layer faster: measured here 1.3-4x for fp32 and 1.1-2x for bf16,
largest for the small matrices of a single short text. Results stay float32/bf16 GEMMs with
float32 accumulation; only the summation order differs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=1)
def packing_available() -> bool:
    ops = torch.ops.mkldnn
    try:
        return (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
                and hasattr(ops, "_linear_pointwise"))
    except Exception:  # ops namespace probing can raise on builds without oneDNN
        return False


@functools.lru_cache(maxsize=None)
def packs(dtype: torch.dtype) -> bool:
    """Whether oneDNN can prepack weights of ``dtype`` on this CPU: its bf16 reorder needs
    AVX512 (BW, VL, DQ) or AVX-NE-CONVERT and raises elsewhere, where bf16 stays dense."""
    if not packing_available():
        return False
    try:
        pack(torch.zeros(8, 8, dtype=dtype))
    except RuntimeError:
        return False
    return True


# The batch size oneDNN is told to lay each weight out for. At 1 it keeps fp32 weights in their
# plain layout on AVX2; at 64 it blocks them (AB16b64a), faster from a single text to batches of
# 32 on the AVX2 CPU we measured (``python -m bench.pack_layout`` compares the two).
PACK_ROWS_HINT = 64


def pack(weight: torch.Tensor) -> torch.Tensor:
    """``[out, in]`` dense weight -> the same weight in oneDNN's prepacked layout."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_ROWS_HINT)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` that also takes a weight from ``pack``."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same names) whose weight may be prepacked."""

    def reset_parameters(self) -> None:
        # No initialisation: every weight comes from a checkpoint. The models are built on the
        # meta device, where torch's init runs through Python decompositions: 0.2 s of CLIP's
        # start-up, for values that are thrown away.
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def pack_linear_weights(model: nn.Module) -> int:
    """Prepack every ``Linear`` weight and attention ``in_proj_weight`` in place, for inference only
    (the packed tensors cannot be trained or saved). Returns how many were packed; 0 where oneDNN
    cannot pack them on this CPU, which leaves the model as it was."""
    count = 0
    for module in model.modules():
        for name in ("weight", "in_proj_weight"):
            if name == "weight" and not isinstance(module, Linear):
                continue
            param = getattr(module, name, None)
            if (isinstance(param, torch.Tensor) and param.dim() == 2 and not param.is_mkldnn
                    and packs(param.dtype)):
                packed = pack(param)
                delattr(module, name)  # drop the dense copy: one copy of the weights only
                setattr(module, name, packed)
                count += 1
    return count
