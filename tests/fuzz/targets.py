"""What the fuzzer calls: ImageBind's ``prepare`` per modality, on a tiny random model, with the
library's default limits, and the property every result must have."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import torch

import handspring_models
from handspring_models.errors import InvalidInputError

SHAPES = {"image": (3, 224, 224), "depth": (1, 224, 224), "thermal": (1, 224, 224),
          "audio": (3, 1, 128, 204), "video": (15, 3, 2, 224, 224), "imu": (6, 2000)}
MODALITIES = tuple(SHAPES)


def tiny_weights(folder: Path | None = None) -> Path:
    """The tests' tiny random ImageBind, converted into ``folder`` (a temporary one by default)."""
    from handspring_models.imagebind.checkpoint import random_state_dict
    from handspring_models.weights import convert
    from tests.imagebind_cases import TINY, WEIGHTS_SEED

    folder = Path(folder or tempfile.mkdtemp(prefix="handspring-fuzz-"))
    pth = folder / "imagebind_tiny.pth"
    torch.save(random_state_dict(TINY, WEIGHTS_SEED), pth)
    merges = Path(importlib.util.find_spec("clip").origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    convert(pth, "imagebind_huge", folder / "weights", merges=merges, architecture=TINY)
    return folder / "weights"


class Target:
    """One modality's ``prepare``; images also as the fast precisions decode them (JPEG drafts
    scaled in the DCT), a different path through the decoder."""

    def __init__(self, modality: str, weights: Path):
        self.modality = modality
        feature = f"imagebind_huge_{modality}"
        self.embedders = [handspring_models.load(feature, weights, precision="fp32")]
        if modality == "image":
            # bf16's decoding, without needing a CPU that runs bf16: the one setting it changes.
            drafting = handspring_models.load(feature, weights, precision="fp32")
            drafting.draft_size = 2 * 224
            self.embedders.append(drafting)

    def __call__(self, data: bytes) -> str:
        """"ok", or the InvalidInputError's message; anything else the library raises escapes, as
        does a broken property."""
        outcome = "ok"
        for embedder in self.embedders:
            try:
                prepared = embedder.prepare(self.modality, data)
            except InvalidInputError as e:
                outcome = str(e)
                continue
            check_prepared(self.modality, prepared)
        return outcome


def check_prepared(modality: str, prepared) -> None:
    assert isinstance(prepared, torch.Tensor), type(prepared)
    assert prepared.dtype == torch.float32, prepared.dtype
    assert tuple(prepared.shape) == SHAPES[modality], tuple(prepared.shape)
    assert bool(torch.isfinite(prepared).all()), "non-finite values in a prepared tensor"
