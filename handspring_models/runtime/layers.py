"""Building blocks shared by more than one model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import attention
from .kernels import Linear, is_prepared, linear


class MultiheadAttention(nn.Module):
    """Self-attention with one fused q/k/v projection, named as ``nn.MultiheadAttention`` names it
    (``in_proj_weight``, ``in_proj_bias``, ``out_proj``, ``bias_k``/``bias_v``), run through
    PyTorch's fused scaled-dot-product kernel, or, once the weights are prepared for inference
    (``kernels.is_prepared``), the library's attention kernel where it runs (``attention``).

    ``add_bias_kv`` (ImageBind's audio, depth, thermal and IMU trunks): one learned key and value,
    already in projected space, are appended to every sequence, so each query sees n + 1 keys."""

    def __init__(self, width: int, heads: int, add_bias_kv: bool = False):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, width))
            self.bias_v = nn.Parameter(torch.empty(1, 1, width))
        else:
            self.bias_k = self.bias_v = None
        self.out_proj = Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over ``x`` [b, n, d], plus ``residual`` (added by the output projection)."""
        b, n, d = x.shape  # batch, tokens, width
        qkv = linear(x, self.in_proj_weight, self.in_proj_bias)
        if (self.bias_k is None and attention.available() and attention.fits(qkv, self.heads)
                and is_prepared(self.in_proj_weight)):
            return self.out_proj(attention.self_attention(qkv, self.heads, causal), residual=residual)
        if self.bias_k is None:
            q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [b, h, n, d/h]
        else:
            q, k, v = qkv.split(d, dim=-1)  # [b, n, d] each
            k = torch.cat([k, self.bias_k.to(k.dtype).expand(b, 1, d)], dim=1)  # [b, n+1, d]
            v = torch.cat([v, self.bias_v.to(v.dtype).expand(b, 1, d)], dim=1)
            q, k, v = (t.reshape(b, -1, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [b, h, n, d/h]
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d), residual=residual)

    def causal_at(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Causal self-attention's output at one position per row: ``x`` [b, n, d], ``index`` [b]
        -> [b, d], equal to ``forward(x, causal=True)[arange(b), index]`` without computing the
        other positions' queries' attention and output projection."""
        if self.bias_k is not None:
            raise NotImplementedError("causal_at does not take add_bias_kv attention")
        b, n, d = x.shape
        qkv = linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.heads, d // self.heads)
        q = qkv[torch.arange(b), index, 0].unsqueeze(2)  # [b, h, 1, d/h]
        k, v = qkv[:, :, 1:].permute(2, 0, 3, 1, 4)  # 2 x [b, h, n, d/h]
        visible = (torch.arange(n) <= index[:, None])[:, None, None, :]  # [b, 1, 1, n]: keys up to the position
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)  # [b, h, 1, d/h]
        return self.out_proj(out.reshape(b, d))
