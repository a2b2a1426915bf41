"""Reading the multilingual CLIPs as published, into (config, one state dict per component, tokenizer.json):

- open_clip's Hub folder of a CLIP whose text tower is a Hugging Face model
  (``text_cfg.hf_model_name``; the LAION XLM-RoBERTa CLIP);
- sentence-transformers' two folders of the multilingual CLIP: the text pipeline
  (Transformer, mean Pooling, Dense) and, optionally, the CLIP it was distilled into, of which
  only the vision tower is kept.

The architecture is read off the tensors and the configs; what neither says (XLM-RoBERTa's
LayerNorm epsilon and pad id, which open_clip takes from the Hub) is the architecture's own constant.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..clip.model import VisionConfig
from ..formats import open_clip as oc
from ..formats import sentence_transformers as st
from .model import MultilingualCLIPConfig
from .text_towers import TextTowerConfig

TOKENIZER = "tokenizer.json"
# RoBERTa and XLM-RoBERTa (fairseq's layout): <s>=0, <pad>=1, </s>=2; LayerNorm epsilon 1e-5.
ROBERTA_PAD_ID = 1
ROBERTA_LAYER_NORM_EPS = 1e-5
DISTILBERT_LAYER_NORM_EPS = 1e-12  # fixed in DistilBERT's code, not in its config


class CheckpointError(ValueError):
    pass


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def vision_config(state: dict[str, torch.Tensor], head_width: int = 64) -> tuple[VisionConfig, int]:
    """(VisionConfig, embed_dim) read off an OpenAI-layout ``visual.*`` state dict."""
    try:
        conv = state["visual.conv1.weight"]
        grid = math.isqrt(state["visual.positional_embedding"].shape[0] - 1)
        embed_dim = state["visual.proj"].shape[1]
    except KeyError as e:
        raise CheckpointError(f"no CLIP ViT vision tower in the checkpoint (missing {e})") from None
    width, patch = conv.shape[0], conv.shape[-1]
    return VisionConfig(image_size=patch * grid, patch_size=patch, width=width,
                        layers=_count(state, "visual.transformer.resblocks."), heads=width // head_width), embed_dim


# ---------------------------------------------------------------- open_clip, Hugging Face text tower

def from_open_clip(folder: Path) -> tuple[MultilingualCLIPConfig, dict[str, dict[str, torch.Tensor]], str]:
    """-> (config, {"image": visual.*, "text": text.*}, the Hub id of its tokenizer)."""
    config, state = oc.read_folder(folder)
    model_cfg = config["model_cfg"]
    oc.check_model_cfg(model_cfg)
    text_cfg = model_cfg.get("text_cfg", {})
    hf_name = text_cfg.get("hf_model_name")
    if not hf_name or "roberta" not in hf_name.lower():
        raise CheckpointError(f"{folder}: the text tower is {hf_name!r}; only (XLM-)RoBERTa text towers are supported")
    try:
        words = state["text.transformer.embeddings.word_embeddings.weight"]
        positions = state["text.transformer.embeddings.position_embeddings.weight"]
        types = state["text.transformer.embeddings.token_type_embeddings.weight"]
        intermediate = state["text.transformer.encoder.layer.0.intermediate.dense.weight"]
        hidden, width = state["text.proj.0.weight"].shape
        embed_dim = state["text.proj.2.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"{folder}: not an open_clip Hugging Face text tower with an MLP head (missing {e})") from None
    text = TextTowerConfig(
        kind="xlm_roberta", vocab_size=words.shape[0], width=width,
        layers=_count(state, "text.transformer.encoder.layer."), heads=width // 64,
        intermediate=intermediate.shape[0], max_positions=positions.shape[0], pad_id=ROBERTA_PAD_ID,
        layer_norm_eps=ROBERTA_LAYER_NORM_EPS, projection="mlp", projection_hidden=hidden, embed_dim=embed_dim,
        type_vocab_size=types.shape[0], mask_pad_ids=True,
    )
    vision, vision_dim = vision_config(state, model_cfg.get("vision_cfg", {}).get("head_width", 64))
    if vision_dim != embed_dim:
        raise CheckpointError(f"{folder}: the towers' output sizes differ ({vision_dim} vs {embed_dim})")
    cfg = MultilingualCLIPConfig(embed_dim=embed_dim, text=text, vision=vision, activation=oc.activation(model_cfg),
                                 context_length=text_cfg.get("context_length", 77))
    parts = {"image": {k: v for k, v in state.items() if k.startswith("visual.")},
             "text": {k: v for k, v in state.items() if k.startswith("text.")}}
    stray = set(state) - set(parts["image"]) - set(parts["text"])
    if stray:
        raise CheckpointError(f"{folder}: unexpected tensors {sorted(stray)[:5]}")
    return cfg, parts, text_cfg.get("hf_tokenizer_name") or hf_name


# ---------------------------------------------------------------- sentence-transformers, two folders

def from_sentence_transformers(text_folder: Path, image_folder: Path | None, default_vision: dict) -> tuple[
        MultilingualCLIPConfig, dict[str, dict[str, torch.Tensor]], Path]:
    """-> (config, {"text": ..., "image": ... if ``image_folder``}, the text tower's tokenizer.json).
    ``default_vision``: the architecture's vision half, recorded when there is no image folder."""
    pipeline = st.text_pipeline(text_folder)
    hf = pipeline["hf_config"]
    if hf.get("model_type") != "distilbert":
        raise CheckpointError(f"{pipeline['transformer']}: model_type {hf.get('model_type')!r}; only DistilBERT is supported")
    if hf.get("activation", "gelu") != "gelu":
        raise CheckpointError(f"{pipeline['transformer']}: activation {hf.get('activation')!r}; only gelu is supported")
    encoder = {f"text.transformer.{k}": v for k, v in st.load_weights(pipeline["transformer"]).items()}
    try:
        dense = pipeline["dense"]["linear.weight"]
    except KeyError:
        raise CheckpointError(f"{text_folder}: the Dense module has no linear.weight") from None
    tokenizer = pipeline["transformer"] / TOKENIZER
    if not tokenizer.is_file():
        raise CheckpointError(f"{pipeline['transformer']}: no {TOKENIZER} (the fast tokenizer's file) beside the model")
    max_positions = hf["max_position_embeddings"]
    text = TextTowerConfig(
        kind="distilbert", vocab_size=hf["vocab_size"], width=hf["dim"], layers=hf["n_layers"], heads=hf["n_heads"],
        intermediate=hf["hidden_dim"], max_positions=max_positions, pad_id=hf.get("pad_token_id", 0),
        layer_norm_eps=DISTILBERT_LAYER_NORM_EPS, projection="linear", projection_hidden=None,
        embed_dim=dense.shape[0],
    )
    parts = {"text": {**encoder, "text.dense.linear.weight": dense}}
    context = min(pipeline["max_seq_length"] or max_positions, max_positions)

    if image_folder is None:
        vision = VisionConfig(**default_vision["vision"])
        activation, eps = default_vision["activation"], default_vision["layer_norm_eps"]
    else:
        from ..clip.checkpoint import load_hf_folder

        clip_config, clip_state = load_hf_folder(st.clip_model_folder(image_folder))
        vision, activation, eps = clip_config.vision, clip_config.activation, clip_config.layer_norm_eps
        if clip_config.embed_dim != text.embed_dim:
            raise CheckpointError(f"{image_folder}: the image tower gives {clip_config.embed_dim}-d vectors, "
                                  f"the text tower {text.embed_dim}-d")
        parts["image"] = {k: v for k, v in clip_state.items() if k.startswith("visual.")}
    cfg = MultilingualCLIPConfig(embed_dim=text.embed_dim, text=text, vision=vision, activation=activation,
                                 layer_norm_eps=eps, context_length=context)
    return cfg, parts, tokenizer
