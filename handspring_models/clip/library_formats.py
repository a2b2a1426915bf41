"""CLIPs of OpenAI's architecture as libraries publish them, into (CLIPConfig, OpenAI-named state dict):

- open_clip's Hub folder (``open_clip_config.json`` + weights): open_clip's names are OpenAI's;
  the config adds what the tensors cannot say (QuickGELU or exact GELU) and is checked for
  options our model does not implement;
- sentence-transformers' CLIP folder (``modules.json`` and one ``CLIPModel`` module): a
  transformers ``CLIPModel`` folder inside, read by ``checkpoint.load_hf_folder``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..formats import open_clip as oc
from ..formats import sentence_transformers as st
from .checkpoint import CheckpointError, config_from_openai, load_hf_folder
from .model import CLIPConfig


def from_open_clip(folder: Path) -> tuple[CLIPConfig, dict[str, torch.Tensor]]:
    config, state = oc.read_folder(folder)
    model_cfg = config["model_cfg"]
    oc.check_model_cfg(model_cfg)
    if model_cfg.get("text_cfg", {}).get("hf_model_name"):
        raise CheckpointError(f"{folder}: its text tower is a Hugging Face model "
                              f"({model_cfg['text_cfg']['hf_model_name']}), not CLIP's: not a clip-family model")
    shape = config_from_openai(state)
    heads = model_cfg.get("text_cfg", {}).get("heads", shape.text.heads)
    vision_heads = shape.vision.width // model_cfg.get("vision_cfg", {}).get("head_width", 64)
    return dataclasses.replace(
        shape, activation=oc.activation(model_cfg),
        text=dataclasses.replace(shape.text, heads=heads),
        vision=dataclasses.replace(shape.vision, heads=vision_heads),
    ), state


def sentence_transformers_clip_folder(folder: Path) -> Path:
    """The transformers ``CLIPModel`` folder inside a sentence-transformers CLIP folder."""
    return st.clip_model_folder(folder)


def from_sentence_transformers(folder: Path) -> tuple[CLIPConfig, dict[str, torch.Tensor], Path]:
    """-> (config, state dict, the folder holding its tokenizer files)."""
    inner = st.clip_model_folder(folder)
    config, state = load_hf_folder(inner)
    return config, state, inner
