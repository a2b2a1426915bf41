"""The SigLIP family: Google's SigLIP and SigLIP 2 (FixRes) image-text models.

- ``model.py``: the network, named as transformers' ``SiglipModel`` checkpoint is.
- ``checkpoint.py``: reading a transformers folder (config, weights, preprocessor config).
- ``images.py``: RGB conversion as transformers does it, then the registry's squash recipe.
- ``embedder.py``: the loaded feature behind the two-step interface.
- The tokenizers (SentencePiece for SigLIP, Gemma's for SigLIP 2) are in ``text/siglip.py``.

This module is the family's face to the registry: ``Embedder``, ``convert``, ``random_weights``.
"""

from __future__ import annotations

from pathlib import Path

from ..weights import WeightsError, random_source, write_folder
from .embedder import SiglipEmbedder as Embedder
from .model import SiglipConfig

__all__ = ["Embedder", "convert", "random_weights"]


def convert(src: Path, spec, out: Path, source: str | None = None, **options) -> None:
    """A transformers ``SiglipModel`` folder as published on the Hub (``config.json``,
    ``model.safetensors``, ``preprocessor_config.json`` and the tokenizer's files) -> a weights
    folder, one file per tower. The folder's preprocessing, when it has its config, must be the
    registry entry's: a check that ``--model`` names the checkpoint's family. SigLIP's
    ``tokenizer_config.json`` may be left out (transformers' defaults are then written)."""
    from ..text.siglip import write_default_sentencepiece_config
    from . import checkpoint as ckpt

    if options:
        raise WeightsError(f"{spec.name} is converted from its folder alone; no {', '.join(sorted(options))}")
    if not src.is_dir():
        raise WeightsError(f"{src}: a transformers SiglipModel folder is expected (config.json, model.safetensors, ...)")
    preprocessor = src / "preprocessor_config.json"
    try:
        config, state = ckpt.load_hf_folder(src)
        recipe = ckpt.image_recipe_from_hf(ckpt._read_json(preprocessor)) if preprocessor.is_file() else None
    except ckpt.CheckpointError as e:
        raise WeightsError(f"{src}: {e}") from None
    want = {"size": config.vision.image_size, "resample": spec.image.resample, "mean": spec.image.mean,
            "std": spec.image.std}
    if recipe is not None and recipe != want:
        raise WeightsError(f"{preprocessor} asks for {recipe}, {spec.name} (and a model of "
                           f"{config.vision.image_size} px) for {want}: is {spec.name} the right --model?")
    if config.text.context_length != spec.tokenizer.context_length:
        raise WeightsError(f"{src}: texts of {config.text.context_length} tokens, {spec.name}'s are "
                           f"{spec.tokenizer.context_length}")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_files = {}
    for name in spec.tokenizer.files:
        if (src / name).is_file():
            tokenizer_files[name] = src / name
        elif name == "tokenizer_config.json":  # optional beside spiece.model: transformers' defaults then
            tokenizer_files[name] = write_default_sentencepiece_config(out / name)
        else:
            raise WeightsError(f"{src / name} is missing: {spec.name}'s tokenizer reads {', '.join(spec.tokenizer.files)}")
    write_folder(out, spec, config.to_dict(), ckpt.split_by_modality(state), tokenizer_files,
                 source if source is not None else f"huggingface:{src.name}")


def random_weights(spec, out: Path, seed: int = 0, architecture: SiglipConfig | None = None) -> None:
    """The entry's shape (or ``architecture``), random (``checkpoint.random_state_dict``), with a
    small stand-in vocabulary of the real special-token layout."""
    from ..text.siglip import write_stand_in
    from . import checkpoint as ckpt

    config = architecture or SiglipConfig.from_dict(spec.architecture)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_files = {path.name: path for path in write_stand_in(spec.tokenizer.kind, out)}
    write_folder(out, spec, config.to_dict(), ckpt.split_by_modality(ckpt.random_state_dict(config, seed)),
                 tokenizer_files, random_source(seed), license="none")
