"""Make tests/data/imagebind_golden_<case>.npz: the reference ImageBind's outputs on seeded random
weights and inputs (see tests/imagebind_cases.py).

    python tests/data/make_imagebind_golden.py /path/to/ImageBind-checkout [tiny|huge ...]

Needs, beside torch 2.13.0: the reference repository (facebookresearch/ImageBind, any checkout
from 2025-11 on: EOT kept on truncation), einops, iopath, ftfy, regex. Its model code imports
two timm helpers that matter only for training (DropPath, trunc_normal_); timm's own import
needs torchvision, so a two-line stand-in is put in its place. The package's __init__ (its data
loaders: torchvision, torchaudio, pytorchvideo) is skipped; only imagebind.models is used.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from handspring_models.imagebind.checkpoint import random_state_dict  # noqa: E402
from tests.imagebind_cases import CASES, TEXTS, WEIGHTS_SEED, model_inputs, reference_kwargs  # noqa: E402


def import_reference(root: Path):
    timm = types.ModuleType("timm")
    layers = types.ModuleType("timm.layers")
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    layers.DropPath = lambda p=0.0: torch.nn.Identity()  # inference: drop-path is the identity
    timm.layers = layers
    sys.modules.update({"timm": timm, "timm.layers": layers})
    package = types.ModuleType("imagebind")
    package.__path__ = [str(root / "imagebind")]
    sys.modules["imagebind"] = package
    from imagebind.models import imagebind_model, multimodal_preprocessors

    return imagebind_model, multimodal_preprocessors


def main(root: Path, cases: list[str]) -> None:
    imagebind_model, preprocessors = import_reference(root)
    tokenizer = preprocessors.SimpleTokenizer(bpe_path=str(root / "imagebind/bpe/bpe_simple_vocab_16e6.txt.gz"))
    tokens = torch.stack([tokenizer(t) for t in TEXTS])  # [n, 77]
    for case in cases:
        cfg, video_clips = CASES[case]
        model = imagebind_model.ImageBindModel(**reference_kwargs(cfg)).eval()
        model.load_state_dict(random_state_dict(cfg, WEIGHTS_SEED), strict=True)
        inputs = model_inputs(cfg, video_clips)
        out = {"text_tokens": tokens.numpy()}
        with torch.no_grad():
            out["text"] = model({"text": tokens})["text"].numpy()
            for name, x in inputs.items():
                modality = "vision" if name == "video" else name
                out[name] = model({modality: x})[modality].numpy()
        np.savez_compressed(HERE / f"imagebind_golden_{case}.npz", **out)
        print(case, {k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:] or list(CASES))
