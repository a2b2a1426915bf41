"""SigLIP features: a ViT pooled by an attention probe, and a bidirectional text transformer
pooled at its last position, behind the two-step interface (``handspring_models.embedder``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from ..embedder import Embedder
from ..errors import InvalidInputError
from ..inputs.image import decode_image
from .images import preprocess
from .model import SigLIP, SiglipConfig


class SiglipEmbedder(Embedder):
    LOOKUP_TABLES = {"text": ("text_model.embeddings.token_embedding.weight",)}
    TOWERS = {"image": "encode_image", "text": "encode_text"}
    RAW_OUTPUT = ("the model's raw features (transformers' get_image_features / get_text_features), "
                  "not normalized")

    def _read_architecture(self, architecture: dict) -> None:
        self.config = SiglipConfig.from_dict(architecture)
        self.dim = self.config.embed_dim
        self.image_size = self.config.vision.image_size
        self.context_length = self.config.text.context_length

    def _build_model(self) -> torch.nn.Module:
        return SigLIP(self.config, with_vision="image" in self.modalities, with_text="text" in self.modalities)

    def _extras(self, model: torch.nn.Module) -> dict:
        return {"logit_scale": float(model.logit_scale), "logit_bias": float(model.logit_bias)}

    @property
    def logit_scale(self) -> float:
        return self.extras["logit_scale"]

    @property
    def logit_bias(self) -> float:
        return self.extras["logit_bias"]

    def meta_extra(self) -> dict:
        """What ``/meta`` adds for this family: the sigmoid loss's scalars, kept but not used to embed."""
        return {"sigmoid": {"logit_scale": self.logit_scale, "logit_bias": self.logit_bias,
                            "match_probability": "sigmoid(exp(logit_scale) * cosine(image, text) + logit_bias)"}}

    def prepare(self, modality: str, item) -> torch.Tensor:
        """One raw input -> model input: image bytes/PIL -> [3, S, S] float; text -> [64] token ids
        (cut, ended and padded as in training, so a text's vector never depends on its batch)."""
        self.require(modality)
        if modality == "text":
            if not isinstance(item, str):
                raise InvalidInputError(f"a text must be a string, not {type(item).__name__}")
            return torch.tensor(self.tokenizer(item), dtype=torch.long)
        if isinstance(item, (bytes, bytearray, memoryview)):
            item = decode_image(bytes(item), self.max_pixels, self.draft_size)
        elif not isinstance(item, Image.Image):
            raise InvalidInputError(f"an image must be encoded bytes or a PIL image, not {type(item).__name__}")
        return preprocess(item, self.image_recipe)

    def tower_inputs(self, modality: str, prepared: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return (torch.stack(list(prepared)),)
