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


# What one more forward pass costs, in token rows: a pass reads every weight once whatever its rows
# (about 10 ms of CLIP's text tower in fp32 on a 2-core EPYC), which is the time of about 40-50
# rows' arithmetic.
PASS_COST_ROWS = 48


def length_groups(lengths: Sequence[int], context_length: int, pass_cost_rows: int = PASS_COST_ROWS) -> list[list[int]]:
    """Indices of a batch of texts, split into groups of similar lengths: each group is one pass,
    padded to its longest text (as ``pad_causal`` pads), and the split minimises the rows computed
    plus ``pass_cost_rows`` per pass. One long text among short ones is then not worth padding every
    short one to its length: 31 texts of 12 tokens and one of 77 are 449 rows in two passes, not
    2464 in one. Groups are runs of the lengths in sorted order (an optimal split is one)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    widths = [min(n + n % 2, context_length) for n in (lengths[i] for i in order)]
    # best[j]: the least cost of the first j texts in sorted order; cut[j]: where its last group starts
    best, cut = [0] + [None] * len(order), [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for i in range(j):  # group = sorted texts i..j-1, padded to widths[j-1]
            if i and widths[i - 1] == widths[i]:
                continue  # never split texts of one width: the same pass, one cost less
            cost = best[i] + (j - i) * widths[j - 1] + pass_cost_rows
            if best[j] is None or cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


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

    def _forward(self, modality: str, prepared: Sequence[torch.Tensor]) -> torch.Tensor:
        """Texts go in passes of similar lengths (``length_groups``): the same vectors, since no
        position after a text's end-of-text token reaches it, with fewer padding rows computed."""
        if modality != "text" or len(prepared) == 1:
            return super()._forward(modality, prepared)
        groups = length_groups([len(t) for t in prepared], self.context_length)
        if len(groups) == 1:
            return super()._forward(modality, prepared)
        forward = super()._forward
        parts = [forward(modality, [prepared[i] for i in group]) for group in groups]
        vectors = torch.empty(len(prepared), parts[0].shape[1], dtype=parts[0].dtype)
        for group, part in zip(groups, parts):
            vectors[group] = part
        return vectors
