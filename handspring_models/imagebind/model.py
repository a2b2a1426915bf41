"""ImageBind (Girdhar et al., 2023): six modalities in one embedding space.

One pre-norm transformer trunk per modality, each with its own stem (how raw input becomes
tokens), head (one token -> the shared space) and post-processing (L2-normalize, then a fixed or
learned scale). Module and parameter names follow the official ``imagebind_huge.pth``
one-to-one (``modality_trunks.audio.blocks.3.attn.bias_k``...), so its state dict loads as is;
any subset of modalities can be built, so a component holds only its own tensors.

Inputs (after preprocessing), per item:
    vision  [3, 224, 224] image, or [3, 2, 224, 224] a pair of video frames
    text    token ids
    audio   [1, 128, 204] log-mel fbank of one 2 s clip
    depth   [1, 224, 224]      thermal [1, 224, 224]      imu [6, 2000]
Audio and video arrive as several clips of one item ([b, clips, ...]); each clip is embedded,
normalized and scaled, and the clips are averaged (not re-normalized), as the reference does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.kernels import Linear
from ..runtime.layers import MultiheadAttention

MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")


@dataclass(frozen=True)
class TrunkConfig:
    width: int
    layers: int
    heads: int


@dataclass(frozen=True)
class ImageBindConfig:
    """``imagebind_huge`` by default. The stems' geometry is fixed by the checkpoint's training."""

    embed_dim: int = 1024
    vision: TrunkConfig = field(default_factory=lambda: TrunkConfig(1280, 32, 16))
    text: TrunkConfig = field(default_factory=lambda: TrunkConfig(1024, 24, 16))
    audio: TrunkConfig = field(default_factory=lambda: TrunkConfig(768, 12, 12))
    depth: TrunkConfig = field(default_factory=lambda: TrunkConfig(384, 12, 8))
    thermal: TrunkConfig = field(default_factory=lambda: TrunkConfig(768, 12, 12))
    imu: TrunkConfig = field(default_factory=lambda: TrunkConfig(512, 6, 8))
    image_size: int = 224
    vision_patch: int = 14  # Conv3d kernel (2, 14, 14) over a pair of frames
    video_frames: int = 2
    context_length: int = 77
    vocab_size: int = 49408
    mel_bins: int = 128
    audio_frames: int = 204
    audio_patch: int = 16
    audio_stride: int = 10
    depth_patch: int = 16  # depth and thermal
    imu_channels: int = 6
    imu_samples: int = 2000
    imu_patch: int = 8
    # The fixed output scales of the non-learned post-processors; text's is learned (in the weights).
    fixed_scales: dict = field(default_factory=lambda: {"audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0})

    def trunk(self, modality: str) -> TrunkConfig:
        return getattr(self, modality)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImageBindConfig:
        d = dict(d)
        trunks = {m: TrunkConfig(**d.pop(m)) for m in MODALITIES if m in d}
        return cls(**trunks, **d)


# ---------------------------------------------------------------- trunk


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1 = Linear(width, 4 * width)
        self.fc2 = Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact GELU


class Block(nn.Module):
    """Pre-norm: ``x + attn(norm_1(x))``, then ``x + mlp(norm_2(x))``."""

    def __init__(self, width: int, heads: int, add_bias_kv: bool):
        super().__init__()
        self.attn = MultiheadAttention(width, heads, add_bias_kv)
        self.norm_1 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = MLP(width)
        self.norm_2 = nn.LayerNorm(width, eps=1e-6)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x), causal=causal)
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    def __init__(self, cfg: TrunkConfig, add_bias_kv: bool, norm_first: bool, causal: bool = False):
        super().__init__()
        self.causal = causal
        if norm_first:  # vision only; in the checkpoint as pre_transformer_layer.0
            self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(cfg.width, eps=1e-6))
        self.blocks = nn.Sequential(*(Block(cfg.width, cfg.heads, add_bias_kv) for _ in range(cfg.layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, n, width] -> [b, n, width]
        if hasattr(self, "pre_transformer_layer"):
            x = self.pre_transformer_layer(x)
        for block in self.blocks:
            x = block(x, self.causal)
        return x


# ---------------------------------------------------------------- stems


class PositionalEmbedding(nn.Module):
    def __init__(self, tokens: int, width: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, tokens, width))


class PatchStem(nn.Module):
    """A patchifying projection (``proj``), optionally followed by a LayerNorm (``norm_layer``)."""

    def __init__(self, proj: nn.Module, width: int | None = None):
        super().__init__()
        self.proj = proj
        self.norm_layer = nn.LayerNorm(width) if width is not None else None  # eps 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)  # [b, width, (t,) h, w] -> [b, patches, width]
        return self.norm_layer(x) if self.norm_layer is not None else x


class ImagePairToVideo(nn.Module):
    """An image is a video of two identical frames: [b, 3, h, w] -> [b, 3, 2, h, w]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2).expand(-1, -1, 2, -1, -1) if x.dim() == 4 else x


class PatchTokens(nn.Module):
    """Stem -> patches, a CLS token in front, learned positions added. The stem's attribute name
    (``rgbt_stem`` or ``depth_stem``) is the checkpoint's."""

    def __init__(self, stem_name: str, stem: PatchStem, patches: int, width: int):
        super().__init__()
        self.stem_name = stem_name
        setattr(self, stem_name, stem)
        self.cls_token = nn.Parameter(torch.empty(1, 1, width))
        self.pos_embedding_helper = PositionalEmbedding(1 + patches, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, self.stem_name)(x)  # [b, patches, width]
        cls = self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embedding_helper.pos_embed.to(x.dtype)


class TextTokens(nn.Module):
    def __init__(self, vocab_size: int, context_length: int, width: int):
        super().__init__()
        # Given storage, nn.Embedding skips its random init (which on the meta device imports torch._dynamo).
        self.token_embedding = nn.Embedding(vocab_size, width, _weight=torch.empty(vocab_size, width))
        self.pos_embed = nn.Parameter(torch.empty(1, context_length, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [b, n] with n <= context
        # The table may be kept in the file's dtype (see Embedder.LOOKUP_TABLES): cast the rows.
        return self.token_embedding(tokens).to(self.pos_embed.dtype) + self.pos_embed[:, : tokens.shape[1]]


class IMUTokens(nn.Module):
    """[b, 6, 2000] -> 250 windows of 8 samples x 6 channels -> tokens, CLS in front, positions added."""

    def __init__(self, channels: int, samples: int, patch: int, width: int):
        super().__init__()
        self.patch = patch
        self.imu_stem = PatchStem(Linear(channels * patch, width, bias=False), width)
        self.cls_token = nn.Parameter(torch.empty(1, 1, width))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + samples // patch, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        windows = x.unfold(-1, self.patch, self.patch).permute(0, 2, 1, 3).reshape(b, -1, x.shape[1] * self.patch)
        x = self.imu_stem.norm_layer(self.imu_stem.proj(windows))  # [b, 250, width]
        cls = self.cls_token.to(x.dtype).expand(b, -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)


# ---------------------------------------------------------------- heads and outputs


class TakeToken(nn.Module):
    def __init__(self, index: int = 0):
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]


class TextHead(nn.Module):
    def __init__(self, width: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(width, eps=1e-6), Linear(width, embed_dim, bias=False))

    def forward(self, x: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        return self.proj(x[torch.arange(x.shape[0]), eot_index])


class LogitScale(nn.Module):
    """Multiply by ``exp(log_logit_scale)``, clipped at 100 (the reference's learned-scale cap)."""

    def __init__(self):
        super().__init__()
        self.log_logit_scale = nn.Parameter(torch.empty(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_logit_scale.float().exp().clamp(max=100)


class L2Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


def _stem(modality: str, cfg: ImageBindConfig) -> nn.Module:
    w = cfg.trunk(modality).width
    if modality == "vision":
        conv = nn.Conv3d(3, w, kernel_size=(cfg.video_frames, cfg.vision_patch, cfg.vision_patch),
                         stride=(cfg.video_frames, cfg.vision_patch, cfg.vision_patch), bias=False)
        patches = (cfg.image_size // cfg.vision_patch) ** 2
        return PatchTokens("rgbt_stem", PatchStem(nn.Sequential(ImagePairToVideo(), conv)), patches, w)
    if modality == "text":
        return TextTokens(cfg.vocab_size, cfg.context_length, w)
    if modality == "audio":
        conv = nn.Conv2d(1, w, kernel_size=cfg.audio_patch, stride=cfg.audio_stride, bias=False)
        patches = ((cfg.mel_bins - cfg.audio_patch) // cfg.audio_stride + 1) * (
            (cfg.audio_frames - cfg.audio_patch) // cfg.audio_stride + 1)  # 12 x 19
        return PatchTokens("rgbt_stem", PatchStem(conv, w), patches, w)
    if modality in ("depth", "thermal"):
        conv = nn.Conv2d(1, w, kernel_size=cfg.depth_patch, stride=cfg.depth_patch, bias=False)
        patches = (cfg.image_size // cfg.depth_patch) ** 2
        return PatchTokens("depth_stem" if modality == "depth" else "rgbt_stem", PatchStem(conv, w), patches, w)
    if modality == "imu":
        return IMUTokens(cfg.imu_channels, cfg.imu_samples, cfg.imu_patch, w)
    raise ValueError(f"unknown modality {modality!r}")


def _head(modality: str, cfg: ImageBindConfig) -> nn.Module:
    w, e = cfg.trunk(modality).width, cfg.embed_dim
    if modality == "text":
        return TextHead(w, e)
    layers = [nn.LayerNorm(w, eps=1e-6), TakeToken(0)]
    if modality == "imu":
        layers.append(nn.Identity())  # the reference's Dropout(0.5): identity at inference, kept for the numbering
    return nn.Sequential(*layers, Linear(w, e, bias=False))


# ---------------------------------------------------------------- the model


class ImageBind(nn.Module):
    def __init__(self, cfg: ImageBindConfig, modalities=MODALITIES):
        super().__init__()
        self.config = cfg
        self.modalities = tuple(modalities)
        self.modality_preprocessors = nn.ModuleDict({m: _stem(m, cfg) for m in self.modalities})
        self.modality_trunks = nn.ModuleDict({
            m: Trunk(cfg.trunk(m), add_bias_kv=m not in ("vision", "text"), norm_first=m == "vision",
                     causal=m == "text")
            for m in self.modalities
        })
        self.modality_heads = nn.ModuleDict({m: _head(m, cfg) for m in self.modalities})
        self.modality_postprocessors = nn.ModuleDict(
            {m: nn.Sequential(L2Normalize(), LogitScale()) for m in self.modalities if m != "vision"})

    def _finish(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Head output -> the reference's output: L2-normalized, then scaled (all but vision)."""
        x = x.float()
        if modality == "vision":
            return F.normalize(x, dim=-1)
        return self.modality_postprocessors[modality](x)

    def encode_text(self, tokens: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """``tokens`` [b, n], n <= 77, ``eot_index`` [b] -> [b, embed_dim] (normalized x learned scale).
        Under the causal mask positions after a row's end-of-text token never reach it, so a batch
        may be cut to its longest text instead of padded to 77."""
        x = self.modality_trunks["text"](self.modality_preprocessors["text"](tokens))
        return self._finish("text", self.modality_heads["text"](x, eot_index))

    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Any non-text modality, [b, *item] or [b, clips, *clip] -> [b, embed_dim], float32.

        A clip dimension (audio [b, 3, 1, 128, 204], video [b, 15, 3, 2, 224, 224]) is folded into
        the batch and the normalized-and-scaled clip vectors are averaged, as the reference does."""
        item_dims = {"vision": 3, "audio": 3, "depth": 3, "thermal": 3, "imu": 2}[modality]
        clips = None
        if x.dim() > item_dims + 1 and not (modality == "vision" and x.dim() == 5):
            b, clips = x.shape[:2]
            x = x.reshape(b * clips, *x.shape[2:])
        tokens = self.modality_preprocessors[modality](x)
        out = self._finish(modality, self.modality_heads[modality](self.modality_trunks[modality](tokens)))
        return out if clips is None else out.view(b, clips, -1).mean(dim=1)
