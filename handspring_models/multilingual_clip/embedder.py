"""Multilingual CLIP features: a bidirectional text tower, mean-pooled over each text's own
tokens, and a CLIP ViT, behind the two-step interface (``handspring_models.embedder``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..embedder import Embedder
from ..errors import InvalidInputError
from .model import MultilingualCLIP, MultilingualCLIPConfig


class MultilingualCLIPEmbedder(Embedder):
    # The word table is the largest tensor by far (XLM-R's 250k x 768 is 768 MB in fp32): a text
    # reads a few of its rows.
    LOOKUP_TABLES = {"text": ("text.transformer.embeddings.word_embeddings.weight",)}
    TOWERS = {"image": "encode_image", "text": "encode_text"}

    def _read_architecture(self, architecture: dict) -> None:
        self.config = MultilingualCLIPConfig.from_dict(architecture)
        self.dim = self.config.embed_dim
        self.image_size = self.config.vision.image_size
        self.context_length = self.config.context_length

    def _build_model(self) -> torch.nn.Module:
        return MultilingualCLIP(self.config, with_vision="image" in self.modalities,
                                with_text="text" in self.modalities)

    def prepare(self, modality: str, item) -> torch.Tensor:
        """One raw input -> model input: image bytes/PIL -> [3, S, S] float; text -> [n] token ids."""
        self.require(modality)
        if modality == "image":
            return self._image_pixels(item)
        if not isinstance(item, str):
            raise InvalidInputError(f"a text must be a string, not {type(item).__name__}")
        return torch.tensor(self.tokenizer(item), dtype=torch.long)

    def _pad_texts(self, prepared: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-id rows -> [b, longest] padded with the pad id, and each row's length. Padding
        is masked out of attention and pooling, so the batch changes no vector."""
        lengths = torch.tensor([len(ids) for ids in prepared])
        tokens = torch.full((len(prepared), int(lengths.max())), self.config.text.pad_id, dtype=torch.long)
        for row, ids in enumerate(prepared):
            tokens[row, : len(ids)] = ids
        return tokens, lengths

    def tower_inputs(self, modality: str, prepared: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if modality == "image":
            return (torch.stack(list(prepared)),)
        return self._pad_texts(prepared)
