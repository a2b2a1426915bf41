"""CPU kernel choices that change speed, not maths.

PyTorch's eager ``F.linear`` lays the weight out for oneDNN again on every call. Reordering each
weight once, at load time, into oneDNN's blocked layout (what torch.compile's CPU "freezing"
does) makes every linear layer faster: measured here 1.3-4x for fp32 and 1.1-2x for bf16,
largest for the small matrices of a single short text. Results stay float32/bf16 GEMMs with
float32 accumulation; only the summation order differs.

fp32 weights go to our own panel kernel instead (``panel_gemm``) where it is built and the CPU
has AVX2. A single request's few rows are bound by how fast the weights stream from memory, and
it streams them about 1.5x faster than oneDNN's AVX2 kernels (11 against 7.6 GB/s in CLIP's text
tower on a Zen 1 EPYC). Its AVX-512 build, on a Zen 5 EPYC: a single text 1.16-1.24x faster than
oneDNN, batches of hundreds of rows 0.9x; ``python -m bench.pack_layout`` compares them.

bf16 weights go to the bf16 panel kernel (``bf16_gemm``) where the CPU has AVX512-BF16: on the
Zen 5 EPYC, a single text 1.29x faster than oneDNN's bf16 kernels, a single image 1.08x, batches
of 32 0.98-1.00x (``python -m bench.pack_layout --precision bf16``).

With ``precision="int8"``, ``quantize_linear_weights`` first hands most weights to the int8 kernel
(``int8_gemm``), which is an approximation; the rest are packed as above.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from . import bf16_gemm, int8_gemm, panel_gemm
from .precision import PrecisionUnavailableError


@functools.lru_cache(maxsize=1)
def packing_available() -> bool:
    ops = torch.ops.mkldnn
    try:
        return (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
                and hasattr(ops, "_linear_pointwise"))
    except Exception:  # ops namespace probing can raise on builds without oneDNN
        return False


@functools.lru_cache(maxsize=None)
def onednn_packs(dtype: torch.dtype) -> bool:
    """Whether oneDNN can prepack weights of ``dtype`` on this CPU: its bf16 reorder needs
    AVX512 (BW, VL, DQ) or AVX-NE-CONVERT and raises elsewhere, where bf16 stays dense."""
    if not packing_available():
        return False
    try:
        onednn_pack(torch.zeros(8, 8, dtype=dtype))
    except RuntimeError:
        return False
    return True


# For A/B benchmarks (bench.pack_layout): False packs every weight for oneDNN, as before the panel
# kernel. Read when weights are packed, so set it before loading a model.
use_panel_kernel = True


def panels_for(weight: torch.Tensor) -> bool:
    """Whether ``pack`` gives ``weight`` to a panel kernel: fp32 weights to ``panel_gemm``, bf16
    ones to ``bf16_gemm``, where built and run by this CPU."""
    if not use_panel_kernel:
        return False
    if weight.dtype == torch.bfloat16:
        return bf16_gemm.fits(weight) and bf16_gemm.available()
    return panel_gemm.fits(weight) and panel_gemm.library() is not None


def packs(dtype: torch.dtype) -> bool:
    """Whether ``pack`` can lay out weights of ``dtype`` for a faster kernel on this CPU."""
    panels = ((dtype == torch.float32 and panel_gemm.library() is not None)
              or (dtype == torch.bfloat16 and bf16_gemm.available()))
    return onednn_packs(dtype) or (use_panel_kernel and panels)


# The batch size oneDNN is told to lay each weight out for. At 1 it keeps fp32 weights in their
# plain layout on AVX2; at 64 it blocks them (AB16b64a), faster from a single text to batches of
# 32 on the AVX2 CPU we measured (``python -m bench.pack_layout`` compares the two).
PACK_ROWS_HINT = 64


def onednn_pack(weight: torch.Tensor) -> torch.Tensor:
    """``[out, in]`` dense weight -> the same weight in oneDNN's prepacked layout."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_ROWS_HINT)


def pack(weight: torch.Tensor) -> torch.Tensor:
    """``[out, in]`` dense weight -> the same weight laid out for the faster kernel here: a panel
    kernel's panels, else oneDNN's prepacked layout."""
    if not panels_for(weight):
        return onednn_pack(weight)
    return bf16_gemm.pack(weight) if weight.dtype == torch.bfloat16 else panel_gemm.pack(weight)


def unpack(weight: torch.Tensor | int8_gemm.Int8Weight) -> torch.Tensor:
    """The dense ``[out, in]`` weight back from ``pack`` or ``int8_gemm.quantize`` (dequantized; a
    dense weight as it is)."""
    if isinstance(weight, int8_gemm.Int8Weight):
        return int8_gemm.dequantize(weight)
    if weight.is_mkldnn:
        return weight.to_dense()
    if bf16_gemm.is_packed(weight):
        return bf16_gemm.unpack(weight)
    return panel_gemm.unpack(weight) if panel_gemm.is_packed(weight) else weight


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's activation, a sigmoid approximation of GELU."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": quick_gelu}


def linear(x: torch.Tensor, weight: torch.Tensor | int8_gemm.Int8Weight, bias: torch.Tensor | None,
           activation: str | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` that also takes a weight from ``pack`` or ``int8_gemm.quantize``, then
    ``ACTIVATIONS[activation]``, then ``+ residual``. The panel and int8 kernels do both on their
    outputs while they are in cache; on the other kernels they are PyTorch's own operators.
    (oneDNN's fused add, ``_linear_pointwise.binary``, measured 4% slower in bf16 than the separate add.)"""
    if isinstance(weight, int8_gemm.Int8Weight):
        return int8_gemm.linear(x, weight, bias, activation, residual)
    if bf16_gemm.is_packed(weight):
        return bf16_gemm.linear(x, weight, bias, activation, residual)
    if weight.dim() == 3 and not weight.is_mkldnn:
        return panel_gemm.linear(x, weight, bias, activation, residual)
    if weight.is_mkldnn:
        y = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    else:
        y = F.linear(x, weight, bias)
    if activation is not None:
        y = ACTIVATIONS[activation](y)
    return y if residual is None else residual + y


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same names) whose weight may be prepacked, and which can
    apply an activation and add a residual to its output (see ``linear``)."""

    def reset_parameters(self) -> None:
        # No initialisation: every weight comes from a checkpoint. The models are built on the
        # meta device, where torch's init runs through Python decompositions: 0.2 s of CLIP's
        # start-up, for values that are thrown away.
        pass

    def forward(self, x: torch.Tensor, activation: str | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        return linear(x, self.weight, self.bias, activation, residual)


class PatchProjection(nn.Conv2d):
    """A ViT's patch embedding: ``nn.Conv2d`` (same parameters, same names) with its stride equal to
    its kernel, which is a linear layer over each flattened patch. Once its weight is packed it runs
    as one, on the linear kernels; a dense weight runs oneDNN's convolution. ``forward`` returns the
    patches' tokens, ``[b, grid_h * grid_w, out]``, in row-major grid order."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool = True):
        if stride != kernel_size:
            raise ValueError(f"a patch projection's stride is its kernel size, not {stride} for {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)

    def reset_parameters(self) -> None:
        pass  # every weight comes from a checkpoint (see Linear)

    def is_dense(self) -> bool:
        """Whether the weight is still the checkpoint's ``[out, c, p, p]``, not packed."""
        w = self.weight
        return w.dim() == 4 and not w.is_mkldnn and not bf16_gemm.is_packed(w)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.is_dense():
            return super().forward(pixels).flatten(2).transpose(1, 2)
        p = self.kernel_size[0]
        b, c, gh, gw = pixels.shape[0], pixels.shape[1], pixels.shape[2] // p, pixels.shape[3] // p
        # as the convolution does, a border narrower than a patch is left out
        patches = pixels[:, :, :gh * p, :gw * p].reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)  # [b, gh, gw, c, p, p]
        return linear(patches.reshape(b, gh * gw, c * p * p), self.weight, self.bias)


def _linear_weights(model: nn.Module):
    """(module name, module, attribute name, weight) for every ``Linear`` weight, attention
    ``in_proj_weight`` and ``PatchProjection`` weight."""
    for module_name, module in model.named_modules():
        for name in ("weight", "in_proj_weight"):
            if name == "weight" and not isinstance(module, (Linear, PatchProjection)):
                continue
            weight = getattr(module, name, None)
            if isinstance(weight, (torch.Tensor, int8_gemm.Int8Weight)):
                yield module_name, module, name, weight


def _as_matrix(module: nn.Module, weight):
    """A patch projection's dense ``[out, c, p, p]`` weight as the ``[out, c p p]`` matrix its
    linear layer multiplies by (what is packed); any other weight as it is."""
    return weight.flatten(1) if isinstance(module, PatchProjection) and module.is_dense() else weight


def int8_targets(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """The linear weights the int8 kernel runs, by state-dict name, as (module, attribute): every
    one that fits it except those of the modules named in the model's ``INT8_KEEPS_PRECISE`` (name
    prefixes), the layers whose error the rest of the model amplifies, measured per model. Works on
    a model built on the meta device. A model without that attribute has not been measured in int8
    and is refused."""
    keep = getattr(model, "INT8_KEEPS_PRECISE", None)
    if keep is None:
        raise PrecisionUnavailableError(f"{type(model).__name__} has no int8 mode; use precision fp32 or bf16")
    targets = {}
    for module_name, module, name, param in _linear_weights(model):
        matrix = _as_matrix(module, param)
        if (isinstance(matrix, torch.Tensor) and matrix.dim() == 2 and int8_gemm.fits(matrix)
                and not (module_name + ".").startswith(tuple(keep))):
            targets[f"{module_name}.{name}" if module_name else name] = (module, name)
    return targets


def set_weight(module: nn.Module, name: str, weight) -> None:
    """Replace a module's weight (a parameter) with another kind of weight: packed or quantized."""
    delattr(module, name)
    setattr(module, name, weight)


def quantize_linear_weights(model: nn.Module) -> int:
    """Quantize the ``int8_targets`` of a loaded model in place for the int8 kernel. Returns how many
    were quantized."""
    targets = int8_targets(model)
    for module, name in targets.values():
        set_weight(module, name, int8_gemm.quantize(_as_matrix(module, getattr(module, name))))
    return len(targets)


def pack_linear_weights(model: nn.Module) -> int:
    """Prepack every ``Linear`` weight and attention ``in_proj_weight`` in place, for inference only
    (the packed tensors cannot be trained or saved). Returns how many were packed; 0 where no
    faster kernel runs on this CPU, which leaves the model as it was. Quantized weights stay as
    they are."""
    count = 0
    for _, module, name, param in _linear_weights(model):
        param = _as_matrix(module, param)
        if (isinstance(param, torch.Tensor) and param.dim() == 2 and not param.is_mkldnn
                and (panels_for(param) or onednn_packs(param.dtype))):
            set_weight(module, name, pack(param))  # drops the dense copy: one copy of the weights only
            count += 1
    return count


def kernel_of(weight) -> str:
    """The kernel a linear weight runs on: ``int8``, ``onednn``, ``panel`` (fp32 or bf16 panels) or
    ``dense`` (PyTorch's plain ``F.linear``)."""
    if isinstance(weight, int8_gemm.Int8Weight):
        return "int8"
    if weight.is_mkldnn:
        return "onednn"
    return "panel" if panel_gemm.is_packed(weight) or bf16_gemm.is_packed(weight) else "dense"


def is_prepared(weight) -> bool:
    """Whether a linear weight was packed or quantized (``pack_linear_weights``,
    ``quantize_linear_weights``): a model loaded for inference. Its other operators may then run on
    the library's kernels too; a dense model, which exporters and converters trace, stays plain
    PyTorch."""
    return kernel_of(weight) != "dense"


def linear_kernels(model: nn.Module) -> dict[str, int]:
    """How many of ``model``'s linear weights each kernel runs (``kernel_of``)."""
    counts = {"panel": 0, "onednn": 0, "dense": 0, "int8": 0}
    for _, _, _, weight in _linear_weights(model):
        counts[kernel_of(weight)] += 1
    return counts
