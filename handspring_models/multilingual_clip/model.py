"""A CLIP vision tower beside a multilingual, bidirectional text tower (XLM-RoBERTa or DistilBERT,
mean-pooled, projected into the image space).

Parameter names are the published checkpoints': the vision tower is OpenAI's ViT under
``visual`` (open_clip's names, and what ``clip.checkpoint`` makes of a transformers CLIPModel),
the text tower Hugging Face's encoder under ``text.transformer`` with its head (``text.proj``,
open_clip's MLP; ``text.dense``, sentence-transformers' Dense). Either tower may be left out for a
one-modality component.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..clip.model import VisionConfig, VisionTransformer
from .text_towers import TextTower, TextTowerConfig


@dataclass(frozen=True)
class MultilingualCLIPConfig:
    embed_dim: int
    text: TextTowerConfig
    vision: VisionConfig = field(default_factory=VisionConfig)
    activation: str = "gelu"  # the vision tower's: "gelu" (LAION) or "quick_gelu" (OpenAI)
    layer_norm_eps: float = 1e-5  # the vision tower's
    context_length: int = 77  # the most tokens of a text, special tokens included

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MultilingualCLIPConfig":
        d = dict(d)
        return cls(text=TextTowerConfig(**d.pop("text")), vision=VisionConfig(**d.pop("vision")), **d)


class MultilingualCLIP(nn.Module):
    def __init__(self, cfg: MultilingualCLIPConfig, with_vision: bool = True, with_text: bool = True):
        super().__init__()
        self.config = cfg
        self.visual = (VisionTransformer(cfg.vision, cfg.embed_dim, cfg.activation, cfg.layer_norm_eps)
                       if with_vision else None)
        self.text = TextTower(cfg.text) if with_text else None

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` [b, 3, size, size] -> image features [b, embed_dim] (not normalized)."""
        return self.visual(pixels)

    def encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``ids`` [b, n] padded after each row's ``lengths`` -> text features [b, embed_dim] (not normalized)."""
        return self.text(ids, lengths)
