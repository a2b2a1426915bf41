"""Reading SigLIP checkpoints as published: a transformers ``SiglipModel`` folder
(``config.json``, ``model.safetensors``, the tokenizer's files, ``preprocessor_config.json``).

The state dict's names are already ours (model.py follows them one-to-one); it is checked against
the architecture and split into one dict per modality. SigLIP 2's FixRes checkpoints are such
folders too; its NaFlex ones (``model_type: siglip2``) are another architecture.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .model import SigLIP, SiglipConfig, TextConfig, VisionConfig

# transformers' SiglipTextConfig / SiglipVisionConfig defaults: published config.json files leave
# out every field equal to them (so400m's text_config gives only its widths and depths).
_TEXT_DEFAULTS = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=12, max_position_embeddings=64, hidden_act="gelu_pytorch_tanh",
                      layer_norm_eps=1e-6, projection_size=None)
_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
                        layer_norm_eps=1e-6, vision_use_head=True)
_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu": "gelu"}
# PIL's resampling filter numbers, as preprocessor_config.json writes them
_RESAMPLE = {2: "bilinear", 3: "bicubic"}
_IGNORED = ("position_ids",)  # buffers older checkpoints saved


class CheckpointError(ValueError):
    pass


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from None


def config_from_hf(hf: dict) -> SiglipConfig:
    """transformers' ``config.json`` of a ``SiglipModel`` -> our config."""
    if hf.get("model_type") == "siglip2":
        raise CheckpointError("a SigLIP 2 NaFlex checkpoint (model_type siglip2, variable resolution) is not "
                              "supported; the FixRes ones (model_type siglip) are")
    if hf.get("model_type", "siglip") != "siglip":
        raise CheckpointError(f"not a SigLIP checkpoint: model_type {hf.get('model_type')!r}")
    t = {**_TEXT_DEFAULTS, **(hf.get("text_config") or {})}
    v = {**_VISION_DEFAULTS, **(hf.get("vision_config") or {})}
    if not v["vision_use_head"]:
        raise CheckpointError("the vision tower has no attention-pooling head (vision_use_head: false)")
    if v["num_channels"] != 3:
        raise CheckpointError(f"{v['num_channels']} image channels; only RGB is supported")
    acts = {v["hidden_act"], t["hidden_act"]}
    if len(acts) != 1 or not acts <= set(_ACTIVATIONS):
        raise CheckpointError(f"unsupported activation(s) {sorted(acts)}")
    eps = {float(v["layer_norm_eps"]), float(t["layer_norm_eps"])}
    if len(eps) != 1:
        raise CheckpointError(f"towers disagree on layer_norm_eps: {sorted(eps)}")
    if not (isinstance(v["image_size"], int) and isinstance(v["patch_size"], int)):
        raise CheckpointError(f"only square images and patches are supported, not image_size "
                              f"{v['image_size']}, patch_size {v['patch_size']}")
    projection = t["projection_size"] if t["projection_size"] is not None else t["hidden_size"]
    if projection != v["hidden_size"]:
        raise CheckpointError(f"text head gives {projection}-d vectors, the image tower {v['hidden_size']}-d")
    for tower in (v, t):
        if tower["hidden_size"] % tower["num_attention_heads"]:
            raise CheckpointError("hidden_size is not a multiple of num_attention_heads")
    return SiglipConfig(
        vision=VisionConfig(image_size=v["image_size"], patch_size=v["patch_size"], width=v["hidden_size"],
                            layers=v["num_hidden_layers"], heads=v["num_attention_heads"],
                            mlp_width=v["intermediate_size"]),
        text=TextConfig(context_length=t["max_position_embeddings"], vocab_size=t["vocab_size"],
                        width=t["hidden_size"], layers=t["num_hidden_layers"], heads=t["num_attention_heads"],
                        mlp_width=t["intermediate_size"], embed_dim=projection),
        activation=_ACTIVATIONS[acts.pop()],
        layer_norm_eps=eps.pop(),
    )


def image_recipe_from_hf(preprocessor: dict) -> dict:
    """``preprocessor_config.json`` -> {size, resample, mean, std}: SigLIP's recipe is a resize
    straight to the square size (no crop), x/255, then (x - mean) / std."""
    size = preprocessor.get("size", {"height": 224, "width": 224})
    if not (isinstance(size, dict) and size.get("height") == size.get("width") and size.get("height")):
        raise CheckpointError(f"only a square resize is supported, not size={size}")
    if preprocessor.get("do_center_crop") or preprocessor.get("do_resize") is False:
        raise CheckpointError("only the squash resize without crop (SigLIP's) is supported")
    if not math.isclose(preprocessor.get("rescale_factor", 1 / 255), 1 / 255):
        raise CheckpointError(f"rescale_factor {preprocessor['rescale_factor']} is not 1/255")
    resample = preprocessor.get("resample", 3)
    if resample not in _RESAMPLE:
        raise CheckpointError(f"resampling filter {resample} is not bilinear (2) or bicubic (3)")
    return {
        "size": size["height"],
        "resample": _RESAMPLE[resample],
        "mean": tuple(float(x) for x in preprocessor.get("image_mean", (0.5, 0.5, 0.5))),
        "std": tuple(float(x) for x in preprocessor.get("image_std", (0.5, 0.5, 0.5))),
    }


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (a transformers SiglipModel folder has model.safetensors)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is corrupt or unreadable: {e}") from None
    return {k: v.contiguous() for k, v in state.items() if not k.endswith(_IGNORED)}


def load_hf_folder(folder: Path) -> tuple[SiglipConfig, dict[str, torch.Tensor]]:
    """(config, state dict checked against it) from a transformers SiglipModel folder."""
    config = config_from_hf(_read_json(folder / "config.json"))
    state = read_state_dict(folder)
    check_fits(config, state)
    return config, state


def check_fits(config: SiglipConfig, state: dict[str, torch.Tensor]) -> None:
    """Fail at convert time, not at serve time, if the tensors do not fit the architecture."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in SigLIP(config).state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        missing = sorted(set(want) - set(have))[:5]
        extra = sorted(set(have) - set(want))[:5]
        wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])[:5]
        raise CheckpointError(f"checkpoint does not fit the architecture: missing {missing}, unexpected {extra}, "
                              f"wrong shapes {wrong}")


LOSS_SCALARS = ("logit_scale", "logit_bias")


def split_by_modality(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{"image": vision_model.*, "text": text_model.*}; the loss's two scalars go in both, so
    either component alone can report them."""
    scalars = {k: state[k] for k in LOSS_SCALARS}
    return {
        "image": {**{k: v for k, v in state.items() if k.startswith("vision_model.")}, **scalars},
        "text": {**{k: v for k, v in state.items() if k.startswith("text_model.")}, **scalars},
    }


def random_state_dict(config: SiglipConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A full state dict of the real shape with random values (demos and benchmarks): weights
    ~ N(0, 1/fan_in), layer norms at one, biases zero, and SigLIP's initial loss scalars."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):  # shapes only
        shapes = SigLIP(config).state_dict()
    state = {}
    for name, p in shapes.items():
        if name.endswith("weight") and "norm" in name:
            value = torch.ones(p.shape)
        elif name.endswith("bias"):
            value = torch.zeros(p.shape)
        else:
            fan_in = p[0].numel() if p.dim() > 1 else p.shape[-1]
            value = torch.randn(p.shape, generator=gen) * fan_in ** -0.5
        state[name] = value
    state["logit_scale"] = torch.tensor([math.log(10.0)])
    state["logit_bias"] = torch.tensor([-10.0])
    return state
