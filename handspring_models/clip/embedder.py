"""CLIP features: a causal text transformer pooled at end-of-text and a ViT, behind the
two-step interface (``handspring_models.embedder``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..embedder import Embedder
from ..errors import InvalidInputError
from .model import CLIP, CLIPConfig


def end_of_text_ids(tokenizer, text) -> torch.Tensor:
    """A text's token ids up to its first end-of-text token. The reference pools at the FIRST
    end-of-text (argmax), which a typed "<|endoftext|>" can bring forward; under the causal mask
    nothing after it matters, so the rest is dropped."""
    if not isinstance(text, str):
        raise InvalidInputError(f"a text must be a string, not {type(text).__name__}")
    ids = tokenizer(text)
    return torch.tensor(ids[: ids.index(tokenizer.eot_id) + 1], dtype=torch.long)


def pad_causal(prepared: Sequence[torch.Tensor], context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows -> [b, width] (pad id 0, as OpenAI does) and each row's end-of-text index.
    ``width`` is the longest text of the batch rounded up to an even count: half as many matrix
    shapes for oneDNN to build and cache. Under the causal mask no padding position reaches a
    real token, so the batch changes no vector."""
    lengths = torch.tensor([len(t) for t in prepared])
    width = min(int(lengths.max()) + int(lengths.max()) % 2, context_length)
    tokens = torch.zeros(len(prepared), width, dtype=torch.long)
    for row, ids in enumerate(prepared):
        tokens[row, : len(ids)] = ids
    return tokens, lengths - 1


class CLIPEmbedder(Embedder):
    LOOKUP_TABLES = {"text": ("token_embedding.weight",)}
    TOWERS = {"image": "encode_image", "text": "encode_text"}

    def _read_architecture(self, architecture: dict) -> None:
        self.config = CLIPConfig.from_dict(architecture)
        self.dim = self.config.embed_dim
        self.image_size = self.config.vision.image_size
        self.context_length = self.config.text.context_length

    def _build_model(self) -> torch.nn.Module:
        return CLIP(self.config, with_vision="image" in self.modalities, with_text="text" in self.modalities)

    def prepare(self, modality: str, item) -> torch.Tensor:
        """One raw input -> model input: image bytes/PIL -> [3, S, S] float; text -> [n] token ids."""
        self.require(modality)
        if modality == "text":
            return end_of_text_ids(self.tokenizer, item)
        return self._image_pixels(item)

    def tower_inputs(self, modality: str, prepared: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if modality == "image":
            return (torch.stack(list(prepared)),)
        return pad_causal(prepared, self.context_length)
