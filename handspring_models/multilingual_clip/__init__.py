"""The multilingual CLIP family: a CLIP ViT beside a bidirectional Hugging Face text tower
(XLM-RoBERTa or DistilBERT), mean-pooled and projected into the image space.

- ``text_towers.py``: the text encoders (Hugging Face's names), pooling and projection heads.
- ``model.py``: both towers together.
- ``checkpoint.py``: reading the published formats (open_clip's Hub folder, sentence-transformers' folders).
- ``embedder.py``: the loaded feature behind the two-step interface.

This module is the family's face to the registry: ``Embedder``, ``convert``, ``random_weights``,
``download_options``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..weights import WeightsError, random_source, state_mismatch, write_folder
from .embedder import MultilingualCLIPEmbedder as Embedder
from .model import MultilingualCLIP, MultilingualCLIPConfig

__all__ = ["Embedder", "convert", "random_weights", "download_options"]

TOKENIZER = "tokenizer.json"


def convert(src: Path, spec, out: Path, image_src: Path | None = None, tokenizer: Path | None = None,
            source: str | None = None, merges: Path | None = None) -> None:
    """The entry's published format -> a weights folder.

    - ``open_clip``: ``src`` is the Hub folder; the tokenizer is ``tokenizer``, else the
      ``tokenizer.json`` beside the weights, else the one of the Hub repo open_clip names.
    - ``sentence_transformers``: ``src`` is the text model's folder, ``image_src`` the CLIP
      folder whose vision tower pairs with it. Without ``image_src`` the weights folder holds the
      text tower alone and serves the ``_text`` feature."""
    from . import checkpoint as ckpt

    if merges is not None:
        raise WeightsError(f"{spec.name} has no BPE merges: --merges is for CLIP's own tokenizer")
    fmt = spec.source.format
    try:
        if fmt == "open_clip":
            if image_src is not None:
                raise WeightsError("--image-src is for models published as two folders; an open_clip folder has both towers")
            config, parts, tokenizer_repo = ckpt.from_open_clip(src)
            tokenizer = tokenizer or _open_clip_tokenizer(src, tokenizer_repo)
        elif fmt == "sentence_transformers":
            if tokenizer is not None:
                raise WeightsError("--tokenizer is not used: a sentence-transformers folder holds its tokenizer")
            config, parts, tokenizer = ckpt.from_sentence_transformers(src, image_src, spec.architecture)
        else:
            raise WeightsError(f"{spec.name}: unknown published format {fmt!r}")
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        if isinstance(e, WeightsError):
            raise
        raise WeightsError(f"{src}: {e}") from None
    _check_fits(config, parts)
    _check_tokenizer(tokenizer, config)
    default_source = f"{fmt}:{src.name}" + (f" + {image_src.name}" if image_src is not None else "")
    write_folder(out, spec, config.to_dict(), parts, {TOKENIZER: tokenizer},
                 source if source is not None else default_source)


def _open_clip_tokenizer(src: Path, repo_id: str) -> Path:
    if (src / TOKENIZER).is_file():
        return src / TOKENIZER
    from ..weights.hub import hub_download

    return Path(hub_download(repo_id, [TOKENIZER])) / TOKENIZER


def download_options(spec) -> dict:
    """What ``download`` passes to ``convert`` besides the main folder: the image tower's folder,
    for a model published as two (``Source.image_repo_id``)."""
    image_repo = getattr(spec.source, "image_repo_id", None)
    if not image_repo:
        return {}
    from ..weights.hub import hub_download

    return {"image_src": Path(hub_download(image_repo, list(spec.source.image_files)))}


def _check_fits(config: MultilingualCLIPConfig, parts: dict[str, dict[str, torch.Tensor]]) -> None:
    """Fail at convert time, not at serve time, if the tensors do not fit the architecture."""
    with torch.device("meta"):
        model = MultilingualCLIP(config, with_vision="image" in parts, with_text="text" in parts)
    problem = state_mismatch(model.state_dict(), {k: v for part in parts.values() for k, v in part.items()})
    if problem:
        raise WeightsError(f"checkpoint does not fit the architecture: {problem}")


def _check_tokenizer(path: Path, config: MultilingualCLIPConfig) -> None:
    from tokenizers import Tokenizer

    try:
        size = Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    except Exception as e:  # the library raises plain Exceptions on a malformed file
        raise WeightsError(f"{path} is not a tokenizers tokenizer.json: {e}") from None
    if size > config.text.vocab_size:
        raise WeightsError(f"{path} has {size} tokens, more than the text tower's {config.text.vocab_size} embeddings")


def random_weights(spec, out: Path, seed: int = 0, architecture: MultilingualCLIPConfig | None = None) -> None:
    """The entry's shape (or ``architecture``), random (LayerNorm gains 1, biases 0, matrices
    scaled by 1/sqrt(fan-in)), with a small stand-in tokenizer of the entry's kind."""
    from ..text.stand_in import stand_in_tokenizer

    config = architecture or MultilingualCLIPConfig.from_dict(spec.architecture)
    torch.manual_seed(seed)
    model = MultilingualCLIP(config)
    for name, p in model.named_parameters():
        if "norm" in name.lower() or name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight")):
            torch.nn.init.ones_(p) if name.endswith("weight") else torch.nn.init.zeros_(p)
        elif name.endswith("bias"):
            torch.nn.init.zeros_(p)
        else:
            torch.nn.init.normal_(p, std=p.shape[-1] ** -0.5 if p.dim() > 1 else 0.02)
    state = model.state_dict()
    parts = {"image": {k: v for k, v in state.items() if k.startswith("visual.")},
             "text": {k: v for k, v in state.items() if k.startswith("text.")}}
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = stand_in_tokenizer(out / TOKENIZER, config.text.kind)
    write_folder(out, spec, config.to_dict(), parts, {TOKENIZER: tokenizer}, random_source(seed), license="none")
