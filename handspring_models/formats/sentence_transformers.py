"""Reading sentence-transformers' folder format: ``modules.json`` listing the pipeline's modules,
each in its own subfolder (or the folder itself, for a first module saved at the root).

Two pipelines are read, the two that Weaviate's sentence-transformers CLIP images run:
- one ``CLIPModel`` module: a Hugging Face ``CLIPModel`` folder with its tokenizer and processor;
- ``Transformer`` (a Hugging Face encoder and its tokenizer), ``Pooling`` (mean) and ``Dense``
  (no bias, identity activation): the multilingual text tower.
Anything else (another pooling, a ``Normalize`` module, an activation) is refused by name, since
it would change the vectors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

MODULES = "modules.json"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_IDENTITY = ("torch.nn.modules.linear.Identity", "torch.nn.Identity")


class SentenceTransformersFormatError(ValueError):
    pass


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SentenceTransformersFormatError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SentenceTransformersFormatError(f"{path} is corrupt: {e}") from None


def read_modules(folder: Path) -> list[tuple[str, Path]]:
    """``modules.json`` -> [(module class name, its folder)], in pipeline order."""
    modules = _read_json(folder / MODULES)
    if not isinstance(modules, list) or not modules:
        raise SentenceTransformersFormatError(f"{folder / MODULES} lists no modules")
    try:
        ordered = sorted(modules, key=lambda m: m["idx"])
        return [(m["type"].rsplit(".", 1)[-1], folder / m["path"]) for m in ordered]
    except (KeyError, TypeError, AttributeError) as e:
        raise SentenceTransformersFormatError(f"{folder / MODULES} is not a sentence-transformers module list: {e}") from None


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A module folder's tensors (``model.safetensors`` or ``pytorch_model.bin``)."""
    for name in _WEIGHTS:
        path = folder / name
        if path.is_file():
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(path)
            return torch.load(path, map_location="cpu", weights_only=True)
    raise SentenceTransformersFormatError(f"{folder}: neither {' nor '.join(_WEIGHTS)} is there")


def clip_model_folder(folder: Path) -> Path:
    """The Hugging Face ``CLIPModel`` folder of a one-module CLIP pipeline."""
    modules = read_modules(folder)
    kinds = [kind for kind, _ in modules]
    if len(modules) != 1 or kinds[0] not in ("CLIPModel", "Transformer"):
        raise SentenceTransformersFormatError(
            f"{folder}: expected one CLIPModel module (sentence-transformers' CLIP), found {kinds}")
    path = modules[0][1]
    hf_config = _read_json(path / "config.json")
    if hf_config.get("model_type") != "clip":
        raise SentenceTransformersFormatError(f"{path / 'config.json'}: model_type {hf_config.get('model_type')!r}, not 'clip'")
    return path


def text_pipeline(folder: Path) -> dict:
    """A Transformer -> mean Pooling -> Dense text pipeline, checked, as
    {"transformer": folder, "hf_config": dict, "max_seq_length": int | None, "dense": tensors, "dense_config": dict}."""
    modules = read_modules(folder)
    kinds = [kind for kind, _ in modules]
    if kinds != ["Transformer", "Pooling", "Dense"]:
        raise SentenceTransformersFormatError(
            f"{folder}: expected the modules Transformer, Pooling, Dense; found {kinds}")
    (_, transformer), (_, pooling), (_, dense) = modules

    pool = _read_json(pooling / "config.json")
    # Older releases (the published models) flag each mode (pooling_mode_mean_tokens: true);
    # newer ones name it (pooling_mode: "mean").
    flags = sorted(k.removeprefix("pooling_mode_") for k, v in pool.items() if k.startswith("pooling_mode_") and v)
    named = pool.get("pooling_mode")
    if not ((flags == ["mean_tokens"] and named is None) or (flags == [] and named == "mean")):
        raise SentenceTransformersFormatError(
            f"{pooling / 'config.json'}: pooling {named or flags}; only mean pooling is supported")

    dense_config = _read_json(dense / "config.json")
    if dense_config.get("bias", True) or dense_config.get("activation_function") not in _IDENTITY:
        raise SentenceTransformersFormatError(
            f"{dense / 'config.json'}: only a Dense without bias and with the identity activation is supported")

    st_config = transformer / "sentence_bert_config.json"
    max_seq_length = _read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    if st_config.is_file() and _read_json(st_config).get("do_lower_case"):
        raise SentenceTransformersFormatError(f"{st_config}: do_lower_case is not supported")
    return {
        "transformer": transformer,
        "hf_config": _read_json(transformer / "config.json"),
        "max_seq_length": max_seq_length,
        "dense": load_weights(dense),
        "dense_config": dense_config,
    }
