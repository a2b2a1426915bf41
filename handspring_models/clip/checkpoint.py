"""Reading CLIP checkpoints as published: a Hugging Face ``CLIPModel`` folder or OpenAI's
``ViT-B-32.pt`` (TorchScript archive or plain state dict, the layout open_clip's OpenAI weights share).

Both come out as (CLIPConfig, state dict in OpenAI's names), split into one dict per modality.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import torch

from .model import CLIPConfig, TextConfig, VisionConfig

# Hugging Face name -> OpenAI name, for the parts of a block and the embeddings.
_HF_BLOCK = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_HF_TOP = {
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_HF_LAYER = re.compile(r"(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_IGNORED = re.compile(r"(^|\.)(logit_scale|position_ids|input_resolution|context_length|vocab_size)$")


class CheckpointError(ValueError):
    pass


def split_by_modality(state_dict: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """OpenAI layout -> {"image": visual.*, "text": everything else}."""
    image = {k: v for k, v in state_dict.items() if k.startswith("visual.")}
    text = {k: v for k, v in state_dict.items() if not k.startswith("visual.")}
    return {"image": image, "text": text}


# ---------------------------------------------------------------- Hugging Face CLIPModel folder

def config_from_hf(hf: dict) -> CLIPConfig:
    v, t = hf["vision_config"], hf["text_config"]
    acts = {v.get("hidden_act", "quick_gelu"), t.get("hidden_act", "quick_gelu")}
    if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
        raise CheckpointError(f"unsupported activation(s) {sorted(acts)}")
    eps = {v.get("layer_norm_eps", 1e-5), t.get("layer_norm_eps", 1e-5)}
    if len(eps) != 1:
        raise CheckpointError(f"towers disagree on layer_norm_eps: {sorted(eps)}")
    for tower in (v, t):
        if tower.get("intermediate_size", 4 * tower["hidden_size"]) != 4 * tower["hidden_size"]:
            raise CheckpointError("only MLPs of 4x width are supported")
    return CLIPConfig(
        embed_dim=hf.get("projection_dim", 512),
        vision=VisionConfig(
            image_size=v["image_size"], patch_size=v["patch_size"], width=v["hidden_size"],
            layers=v["num_hidden_layers"], heads=v["num_attention_heads"],
        ),
        text=TextConfig(
            context_length=t["max_position_embeddings"], vocab_size=t["vocab_size"], width=t["hidden_size"],
            layers=t["num_hidden_layers"], heads=t["num_attention_heads"],
        ),
        activation=acts.pop(),
        layer_norm_eps=float(eps.pop()),
    )


def state_dict_from_hf(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, int, str], dict[str, torch.Tensor]] = {}
    for key, value in hf_state.items():
        key = key.removeprefix("model.")
        if _IGNORED.search(key):
            continue
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.t()  # Linear [out, in] -> matrix [in, out]
        elif key == "text_projection.weight":
            out["text_projection"] = value.t()
        elif m := _HF_LAYER.match(key):
            tower, layer, part, kind = m.group(1), int(m.group(2)), m.group(3), m.group(4)
            prefix = f"{'visual.' if tower == 'vision' else ''}transformer.resblocks.{layer}."
            if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((prefix, layer, kind), {})[part[-6]] = value
            elif part in _HF_BLOCK:
                out[f"{prefix}{_HF_BLOCK[part]}.{kind}"] = value
            else:
                raise CheckpointError(f"unexpected parameter {key}")
        else:
            raise CheckpointError(f"unexpected parameter {key}")
    for (prefix, _, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"incomplete q/k/v projections under {prefix}")
        out[f"{prefix}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return {k: v.contiguous() for k, v in out.items()}


def load_hf_folder(folder: Path) -> tuple[CLIPConfig, dict[str, torch.Tensor]]:
    config = config_from_hf(json.loads((folder / "config.json").read_text()))
    if (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        hf_state = load_file(folder / "model.safetensors")
    elif (folder / "pytorch_model.bin").exists():
        hf_state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise CheckpointError(f"{folder}: neither model.safetensors nor pytorch_model.bin is there")
    return config, state_dict_from_hf(hf_state)


# ---------------------------------------------------------------- OpenAI checkpoint file

def load_openai_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """OpenAI ships TorchScript archives; open_clip and others re-save them as plain state dicts."""
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript, but that is what OpenAI shipped
            warnings.simplefilter("ignore", DeprecationWarning)
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: not a state dict or TorchScript archive") from None
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: v.contiguous() for k, v in state.items() if not _IGNORED.search(k)}


def config_from_openai(state: dict[str, torch.Tensor]) -> CLIPConfig:
    """Read the architecture off the tensor shapes, as OpenAI's own loader does."""
    try:
        v_width = state["visual.conv1.weight"].shape[0]
        patch = state["visual.conv1.weight"].shape[-1]
        grid = math.isqrt(state["visual.positional_embedding"].shape[0] - 1)
        t_width = state["ln_final.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"not a CLIP ViT checkpoint in OpenAI's layout (missing {e})") from None

    def count_blocks(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

    return CLIPConfig(
        embed_dim=state["text_projection"].shape[1],
        vision=VisionConfig(image_size=patch * grid, patch_size=patch, width=v_width,
                            layers=count_blocks("visual.transformer.resblocks."), heads=v_width // 64),
        text=TextConfig(context_length=state["positional_embedding"].shape[0],
                        vocab_size=state["token_embedding.weight"].shape[0], width=t_width,
                        layers=count_blocks("transformer.resblocks."), heads=t_width // 64),
    )
