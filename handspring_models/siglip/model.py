"""SigLIP (Zhai et al., 2023) and SigLIP 2 (Tschannen et al., 2025, FixRes checkpoints): an image
tower and a text tower trained with a sigmoid loss into one space.

- Image: a ViT with no class token; patches plus learned positions, pre-norm blocks, a final layer
  norm, then a multi-head attention probe (MAP head) pools every patch into one vector.
- Text: a bidirectional transformer (no causal mask, no padding mask: texts are padded to 64 tokens
  as in training and the pads are attended to), pooled at the *last position*, then a linear head.
- ``logit_scale`` / ``logit_bias``: the sigmoid loss's temperature and bias, kept with the weights
  and reported, never used to embed.

Module and parameter names follow transformers' ``SiglipModel`` checkpoint one-to-one
(``vision_model.encoder.layers.0.self_attn.q_proj.weight``, ``vision_model.head.probe``,
``text_model.head.weight``...), so its state dict loads as is. The towers are separate modules, so
a component can hold just one of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.kernels import Linear, linear


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_width: int = 3072


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 64
    vocab_size: int = 32000
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_width: int = 3072
    embed_dim: int = 768  # the head's output: the shared space, the image tower's width


@dataclass(frozen=True)
class SiglipConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    activation: str = "gelu_tanh"  # transformers' "gelu_pytorch_tanh", every published checkpoint's
    layer_norm_eps: float = 1e-6

    @property
    def embed_dim(self) -> int:
        return self.vision.width

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SiglipConfig":
        d = dict(d)
        return cls(vision=VisionConfig(**d.pop("vision")), text=TextConfig(**d.pop("text")), **d)


ACTIVATIONS = {
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
}


def _table(rows: int, width: int) -> nn.Embedding:
    # Given storage, nn.Embedding skips its random init (on the meta device that init would import
    # torch._dynamo: a second of start-up for values that are replaced anyway).
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width))


class MLP(nn.Module):
    def __init__(self, width: int, mlp_width: int, activation: str):
        super().__init__()
        self.fc1 = Linear(width, mlp_width)
        self.activation = ACTIVATIONS[activation]
        self.fc2 = Linear(mlp_width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class Attention(nn.Module):
    """Bidirectional self-attention with separate q/k/v projections (the checkpoint's layout)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = Linear(width, width)
        self.k_proj = Linear(width, width)
        self.v_proj = Linear(width, width)
        self.out_proj = Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape  # batch, tokens, width
        q, k, v = (proj(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)  # [b, h, n, d/h]
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, mlp_width: int, activation: str, eps: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.self_attn = Attention(width, heads)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_width, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_width: int, activation: str, eps: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(width, heads, mlp_width, activation, eps) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ProbeAttention(nn.Module):
    """``nn.MultiheadAttention``'s parameters (fused ``in_proj_weight``, ``out_proj``), used for
    cross-attention: one learned query (the probe) over every patch."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = Linear(width, width)

    def forward(self, probe: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        # The fused weight may be prepacked (kernels.pack_linear_weights), so it is applied whole and
        # the output split: the probe's keys/values and the patches' queries are a third of one
        # projection of one layer, thrown away.
        q = linear(probe, self.in_proj_weight, self.in_proj_bias)[..., :d]  # [1, 1, d]
        k, v = linear(x, self.in_proj_weight, self.in_proj_bias)[..., d:].split(d, dim=-1)  # [b, n, d] each
        q = q.expand(b, 1, d).reshape(b, 1, h, d // h).transpose(1, 2)  # [b, h, 1, d/h]
        k, v = (t.reshape(b, n, h, d // h).transpose(1, 2) for t in (k, v))  # [b, h, n, d/h]
        out = F.scaled_dot_product_attention(q, k, v)  # [b, h, 1, d/h]
        return self.out_proj(out.transpose(1, 2).reshape(b, 1, d))


class AttentionPoolingHead(nn.Module):
    """MAP head: the probe attends to the patches, then a residual MLP; one vector per image."""

    def __init__(self, width: int, heads: int, mlp_width: int, activation: str, eps: float):
        super().__init__()
        self.probe = nn.Parameter(torch.empty(1, 1, width))
        self.attention = ProbeAttention(width, heads)
        self.layernorm = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_width, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(self.probe.to(x.dtype), x)  # [b, 1, width]
        x = x + self.mlp(self.layernorm(x))
        return x[:, 0]


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        grid = cfg.image_size // cfg.patch_size
        self.patch_embedding = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = _table(grid * grid, cfg.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixels)  # [b, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)  # [b, grid*grid, width], row-major patches
        return x + self.position_embedding.weight.to(x.dtype)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig, activation: str, eps: float):
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.encoder = Encoder(cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps)
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=eps)
        self.head = AttentionPoolingHead(cfg.width, cfg.heads, cfg.mlp_width, activation, eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.embeddings(pixels))
        return self.head(self.post_layernorm(x))  # [b, width]


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.token_embedding = _table(cfg.vocab_size, cfg.width)
        self.position_embedding = _table(cfg.context_length, cfg.width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = self.position_embedding.weight[: tokens.shape[1]]
        # The token table may be kept in the file's dtype, memory-mapped: cast the rows looked up.
        return self.token_embedding(tokens).to(positions.dtype) + positions


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig, activation: str, eps: float):
        super().__init__()
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder(cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps)
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=eps)
        self.head = Linear(cfg.width, cfg.embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.embeddings(tokens))  # [b, n, width]
        # Pooled at the last position, whatever token is there (a pad, for a short text): what the
        # model was trained with, so every text must arrive padded to the full context.
        return self.head(self.final_layer_norm(x[:, -1]))  # [b, embed_dim]


class SigLIP(nn.Module):
    """Both towers and the loss's two scalars, laid out as transformers' checkpoint is. Either tower
    may be left out for a one-modality component."""

    def __init__(self, cfg: SiglipConfig, with_vision: bool = True, with_text: bool = True):
        super().__init__()
        self.config = cfg
        act, eps = cfg.activation, cfg.layer_norm_eps
        self.vision_model = VisionTransformer(cfg.vision, act, eps) if with_vision else None
        self.text_model = TextTransformer(cfg.text, act, eps) if with_text else None
        self.logit_scale = nn.Parameter(torch.empty(1))
        self.logit_bias = nn.Parameter(torch.empty(1))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` [b, 3, size, size] -> features [b, embed_dim], float32, not normalized."""
        return self.vision_model(pixels).float()

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` [b, context_length], each row padded to the full context -> features
        [b, embed_dim], float32, not normalized. Rows never see each other: batch-invariant."""
        return self.text_model(tokens).float()
