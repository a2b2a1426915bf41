"""CLIP (Radford et al., 2021): a vision transformer and a text transformer in one 512-d space.

Module and parameter names follow OpenAI's checkpoint one-to-one (``visual.conv1.weight``,
``transformer.resblocks.0.attn.in_proj_weight``...), so a state dict in OpenAI's layout loads
as is. The two towers are separate modules, so a component can hold just one of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.kernels import Linear, PatchProjection
from ..runtime.layers import MultiheadAttention


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8


@dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    activation: str = "quick_gelu"  # OpenAI's checkpoints; some open_clip ones use "gelu"
    layer_norm_eps: float = 1e-5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CLIPConfig":
        d = dict(d)
        return cls(vision=VisionConfig(**d.pop("vision")), text=TextConfig(**d.pop("text")), **d)


class MLP(nn.Module):
    def __init__(self, width: int, activation: str):
        super().__init__()
        self.c_fc = Linear(width, 4 * width)
        self.activation = activation  # "quick_gelu" (x * sigmoid(1.702 x)) or "gelu" (exact)
        self.c_proj = Linear(4 * width, width)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``residual + c_proj(act(c_fc(x)))``; the linear layers apply QuickGELU and add the residual
        (on the panel kernel, while its outputs are in cache)."""
        if self.activation == "quick_gelu":
            h = self.c_fc(x, activation="quick_gelu")
        else:
            h = F.gelu(self.c_fc(x))
        return self.c_proj(h, residual=residual)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, activation: str, eps: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, activation)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = self.attn(self.ln_1(x), causal=causal, residual=x)  # x + attn(ln_1(x))
        return self.mlp(self.ln_2(x), residual=x)  # x + mlp(ln_2(x))

    def causal_at(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The causal block's output at one position per row: [b, n, width], [b] -> [b, width]."""
        x = x[torch.arange(x.shape[0]), index] + self.attn.causal_at(self.ln_1(x), index)
        return self.mlp(self.ln_2(x), residual=x)


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, activation: str, eps: float):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, activation, eps) for _ in range(layers))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, causal=causal)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig, embed_dim: int, activation: str, eps: float):
        super().__init__()
        grid = cfg.image_size // cfg.patch_size
        self.conv1 = PatchProjection(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(cfg.width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, cfg.width))
        self.ln_pre = nn.LayerNorm(cfg.width, eps=eps)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, activation, eps)
        self.ln_post = nn.LayerNorm(cfg.width, eps=eps)
        self.proj = nn.Parameter(torch.empty(cfg.width, embed_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels)  # [b, grid*grid, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # [b, 1+grid*grid, width]
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj  # [b, embed_dim]


class CLIP(nn.Module):
    """Both towers, laid out as OpenAI's checkpoint is: the vision tower under ``visual``, the
    text tower's parameters at the top level. Either may be left out for a one-modality component."""

    # precision="int8" keeps each tower's first block in fp32: its error is carried through every
    # later block, and it was the one block whose precision moved the worst cosine (README, Speed).
    INT8_KEEPS_PRECISE = ("transformer.resblocks.0.", "visual.conv1.", "visual.transformer.resblocks.0.")

    def __init__(self, cfg: CLIPConfig, with_vision: bool = True, with_text: bool = True):
        super().__init__()
        self.config = cfg
        act, eps = cfg.activation, cfg.layer_norm_eps
        self.visual = VisionTransformer(cfg.vision, cfg.embed_dim, act, eps) if with_vision else None
        if with_text:
            t = cfg.text
            # Given storage, nn.Embedding skips its random init; on the meta device (how the weights
            # are loaded) that init would import torch._dynamo: 1.4 s of start-up for nothing.
            self.token_embedding = nn.Embedding(t.vocab_size, t.width, _weight=torch.empty(t.vocab_size, t.width))
            self.positional_embedding = nn.Parameter(torch.empty(t.context_length, t.width))
            self.transformer = Transformer(t.width, t.layers, t.heads, act, eps)
            self.ln_final = nn.LayerNorm(t.width, eps=eps)
            self.text_projection = nn.Parameter(torch.empty(t.width, cfg.embed_dim))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` [b, 3, size, size] -> image features [b, embed_dim] (not normalized)."""
        return self.visual(pixels)

    def encode_text(self, tokens: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """``tokens`` [b, n] with n <= context; ``eot_index`` [b], each row's end-of-text position.

        Thanks to the causal mask, positions after a row's end-of-text token never reach it, so a
        batch may be cut to its longest text instead of padded to the full context."""
        n = tokens.shape[1]
        # The table may be kept in the file's dtype (see Embedder.LOOKUP_TABLES): cast the rows.
        x = self.token_embedding(tokens).to(self.positional_embedding.dtype) + self.positional_embedding[:n]  # [b, n, width]
        *blocks, last = self.transformer.resblocks
        for block in blocks:
            x = block(x, causal=True)
        # Only the end-of-text position is read after the last block: computing it alone is
        # the same maths, and spares that block's output projection and MLP for the other rows.
        x = last.causal_at(x, eot_index)  # [b, width]
        return self.ln_final(x) @ self.text_projection  # [b, embed_dim], not normalized
