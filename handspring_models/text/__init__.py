"""Tokenizers, by the kind a registry entry names (``TokenizerSpec.kind``).

CLIP's byte-level BPE is ours (``clip_bpe``: exact to OpenAI's, ftfy and HTML cleaning included).
Every other kind reads the model's own files with a well-kept library (Hugging Face
``tokenizers``, ``sentencepiece``), adding only what the model's pipeline does around it.
A loader takes the spec and the weights folder and returns a callable ``text -> list[int]``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# kind -> "module:function" of its loader, imported on first use
LOADERS = {
    "clip_bpe": "handspring_models.text.clip_bpe:from_spec",
    "hf_tokenizer": "handspring_models.text.hf_tokenizer:from_spec",
    "siglip_sentencepiece": "handspring_models.text.siglip:sentencepiece_from_spec",
    "gemma": "handspring_models.text.siglip:gemma_from_spec",
}


def load_tokenizer(spec, folder: Path):
    """The tokenizer of a registry entry (``spec``: its ``TokenizerSpec``), from a weights folder."""
    try:
        module, function = LOADERS[spec.kind].split(":")
    except KeyError:
        raise ValueError(f"unknown tokenizer kind {spec.kind!r}; known: {', '.join(LOADERS)}") from None
    return getattr(importlib.import_module(module), function)(spec, Path(folder))
