"""Reading the official ImageBind checkpoint and splitting it per modality.

``imagebind_huge.pth`` is one plain state dict (1.2 G parameters, 4.8 GB in float32) whose names
our ``ImageBind`` module uses as they are. Splitting it by the second name component
(``modality_trunks.<modality>.…``) gives one file per modality, so a feature loads only its own.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .model import MODALITIES, ImageBind, ImageBindConfig

# The reference registers its causal text mask as a buffer, so the checkpoint carries it; our text
# trunk builds the mask itself.
CAUSAL_MASK_KEY = "modality_preprocessors.text.mask"


def load_official(path: Path) -> dict[str, torch.Tensor]:
    """The .pth as a state dict, memory-mapped (a 4.8 GB file is not read into memory twice)."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not an ImageBind state dict")
    return state


def modality_of(key: str) -> str:
    parts = key.split(".")
    if len(parts) < 3 or parts[1] not in MODALITIES:
        raise ValueError(f"unexpected tensor {key!r}: not modality_<part>.<modality>.…")
    return parts[1]


def split_by_modality(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if key == CAUSAL_MASK_KEY:
            continue
        parts.setdefault(modality_of(key), {})[key] = tensor
    return parts


def config_from_state(state: dict[str, torch.Tensor]) -> ImageBindConfig:
    """The architecture a checkpoint holds. Widths, depths and the output size are read off the
    tensors; head counts cannot be, so a trunk must have imagebind_huge's width to get its heads
    (other architectures are passed to ``convert`` explicitly)."""
    huge = ImageBindConfig()
    trunks = {}
    for m in MODALITIES:
        prefix = f"modality_trunks.{m}.blocks."
        layers = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
        if not layers:
            continue
        width = state[f"{prefix}0.norm_1.weight"].shape[0]
        if width != huge.trunk(m).width:
            raise ValueError(f"the {m} trunk is {width} wide, not imagebind_huge's {huge.trunk(m).width}: "
                             "its head count is unknown; pass the architecture explicitly")
        trunks[m] = {"width": width, "layers": max(layers) + 1, "heads": huge.trunk(m).heads}
    head = state.get("modality_heads.vision.2.weight", state.get("modality_heads.text.proj.1.weight"))
    embed_dim = head.shape[0] if head is not None else huge.embed_dim
    return ImageBindConfig.from_dict({**huge.to_dict(), **trunks, "embed_dim": embed_dim})


def check_fits(cfg: ImageBindConfig, parts: dict[str, dict[str, torch.Tensor]]) -> None:
    """Every tensor of each present modality exactly where and as big as the model wants it."""
    from ..weights import state_mismatch

    with torch.device("meta"):
        model = ImageBind(cfg, modalities=tuple(parts))
    problem = state_mismatch(model.state_dict(), {k: v for part in parts.values() for k, v in part.items()})
    if problem:
        raise ValueError(f"checkpoint does not fit the ImageBind architecture: {problem}")


def random_state_dict(cfg: ImageBindConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random-weight checkpoint in the official layout (causal mask included), the same for a
    given seed on every machine: for demos, benchmarks, and to compare with the reference on
    identical weights. Scales keep activations in a sane range through deep random trunks."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in ImageBind(cfg).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if key.endswith("log_logit_scale"):
            m = modality_of(key)
            value = cfg.fixed_scales.get(m, 1 / 0.07)  # text: CLIP's initial temperature
            state[key] = torch.tensor(float(torch.tensor(value).log()))
        elif key.endswith(("norm_1.weight", "norm_2.weight", "norm_layer.weight", "0.weight")) and len(shape) == 1:
            state[key] = 1 + 0.1 * torch.randn(shape, generator=gen)  # LayerNorm gains
        elif key.endswith(("bias_k", "bias_v")):  # a key/value like the projected ones, so it matters
            state[key] = torch.randn(shape, generator=gen)
        elif len(shape) == 1:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        else:
            fan_in = shape[1:].numel() if len(shape) > 1 and not key.endswith(("pos_embed", "cls_token")) else 1
            std = fan_in ** -0.5 if fan_in > 1 else 0.02
            if key.endswith("token_embedding.weight"):
                std = 0.02
            state[key] = std * torch.randn(shape, generator=gen)
    mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
    state[CAUSAL_MASK_KEY] = mask
    return state
