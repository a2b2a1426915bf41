"""Reading open_clip's published format: a Hub folder with ``open_clip_config.json`` (``model_cfg``,
``preprocess_cfg``) and ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``.

open_clip's own ViT names are OpenAI's (``visual.conv1.weight``, ``transformer.resblocks.0...``),
and a Hugging Face text tower sits under ``text.transformer`` with its own names: the state dict
is kept as it is, less what inference does not use (``logit_scale``...).

What the config may say is checked against what our models implement: an option they do not
(layer scale, attentional pooling, a timm trunk...) is refused by name, never ignored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

CONFIG = "open_clip_config.json"
WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_UNUSED = re.compile(r"(^|\.)(logit_scale|logit_bias|attn_mask|position_ids|token_type_ids)$")

# Options our towers implement only at these values (open_clip's defaults). Options absent here
# either size the model (read from the tensors too) or do not change inference (dropout, ...).
_VISION_FIXED = {
    "head_width": 64, "mlp_ratio": 4.0, "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False,
    "pos_embed_type": "learnable", "pool_type": "tok", "act_kwargs": None, "norm_kwargs": None,
    "block_type": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
    "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "timm_model_name": None,
}
_TEXT_FIXED = {
    "mlp_ratio": 4.0, "ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "pool_type": "argmax",
    "proj_bias": False, "proj_type": "linear", "act_kwargs": None, "norm_kwargs": None, "block_type": None,
    "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
    "scale_attn": False, "scale_fc": False, "hf_model_name": None, "tokenizer_mode": None,
}
_HF_TEXT_FIXED = {"hf_pooler_type": "mean_pooler", "hf_proj_type": "mlp", "tokenizer_mode": None}
_TOP_LEVEL = {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg", "cast_dtype", "init_logit_scale",
              "init_logit_bias", "custom_text"}


class OpenClipFormatError(ValueError):
    pass


def read_folder(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """-> (the ``open_clip_config.json`` contents, the state dict without unused tensors)."""
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise OpenClipFormatError(f"{folder}: no {CONFIG} (an open_clip Hub folder has one)")
    try:
        config = json.loads(config_path.read_text())
        config["model_cfg"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise OpenClipFormatError(f"{config_path} is not an open_clip config: {e}") from None
    for name in WEIGHTS:
        path = folder / name
        if path.is_file():
            break
    else:
        raise OpenClipFormatError(f"{folder}: neither {' nor '.join(WEIGHTS)} is there")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a training checkpoint
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return config, {k: v.contiguous() for k, v in state.items() if not _UNUSED.search(k)}


def _check_fixed(section: str, cfg: dict, fixed: dict) -> None:
    for key, value in fixed.items():
        got = cfg.get(key, value)
        if got != value and not (key == "block_type" and got == "default"):
            raise OpenClipFormatError(f"{section}.{key} = {got!r} is not supported (only {value!r})")


def check_model_cfg(model_cfg: dict) -> None:
    """Refuse, by name, any option whose effect our models do not implement."""
    unknown = set(model_cfg) - _TOP_LEVEL
    if unknown:
        raise OpenClipFormatError(f"model_cfg has options we do not implement: {sorted(unknown)}")
    _check_fixed("vision_cfg", model_cfg.get("vision_cfg", {}), _VISION_FIXED)
    text = model_cfg.get("text_cfg", {})
    if text.get("hf_model_name"):
        _check_fixed("text_cfg", text, _HF_TEXT_FIXED)
    else:
        _check_fixed("text_cfg", text, _TEXT_FIXED)


def activation(model_cfg: dict) -> str:
    return "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
