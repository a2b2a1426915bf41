"""(e) The catalog's references for the library-published CLIPs: open_clip (its Hub folder) and
sentence-transformers (its module folders), built at full size with random weights by the
libraries themselves (tests/clip_family_checkpoints.py) and loaded as the libraries load them.

The reference embeds what it embeds in Weaviate's container: open_clip's tokenizer pads every
text to 77 tokens; sentence-transformers pads a batch to its longest text.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Where a build keeps what the reference needs beside the published folder.
_HUB_STAND_IN = "xlm-roberta-base"  # open_clip's XLM-R text tower reads this Hub repo's config
_IMAGE_FOLDER = "st-clip"  # the multilingual model's image tower, published apart


def _full_size_only(quick: bool) -> None:
    if quick:
        raise NotImplementedError("this reference is built at full size only (run without --quick)")


def build_open_clip(spec, root: Path, seed: int, quick: bool, log):
    from tests.clip_family_checkpoints import build_open_clip as build, build_open_clip_xlm_roberta
    from tests.reference_libraries import import_open_clip

    from .checkpoint import bpe_path

    _full_size_only(quick)
    open_clip = import_open_clip()
    if spec.family == "multilingual_clip":
        build_open_clip_xlm_roberta(open_clip, root / "hf", root / _HUB_STAND_IN, seed)
    else:
        name, tag = spec.aliases[0].rsplit("-", 1)  # the Weaviate tag: "<open_clip model>-<pretrained tag>"
        build(open_clip, name, tag, root / "hf", bpe_path(), seed)
    return root / "hf", {}


def load_open_clip(folder: Path, dtype: torch.dtype):
    from tests.reference_libraries import import_open_clip

    from .catalog import Reference

    open_clip = import_open_clip()
    model_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    if model_cfg.get("text_cfg", {}).get("hf_model_name"):  # the Hub repo it names is the stand-in beside
        model_cfg["text_cfg"].update(hf_model_name=str(folder.parent / _HUB_STAND_IN), hf_model_pretrained=False)
        model = open_clip.CustomTextCLIP(**model_cfg)
        open_clip.load_checkpoint(model, str(folder / "open_clip_model.safetensors"))
    else:
        model = open_clip.create_model(f"local-dir:{folder}")
    model = model.eval().to(dtype)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")

    @torch.no_grad()
    def images(pixels):
        return model.encode_image(pixels.to(dtype)).float()

    @torch.no_grad()
    def texts(tokens):
        return model.encode_text(tokens["ids"]).float()

    return Reference(images, lambda t: {"ids": tokenizer(t)}, texts)


def build_sentence_transformers(spec, root: Path, seed: int, quick: bool, log):
    from tests.clip_family_checkpoints import build_st_clip, build_st_multilingual_text

    from .checkpoint import bpe_path

    _full_size_only(quick)
    if spec.family == "multilingual_clip":
        build_st_clip(root / _IMAGE_FOLDER, bpe_path(), seed)
        build_st_multilingual_text(root / "hf", seed + 1)
        return root / "hf", {"image_src": root / _IMAGE_FOLDER}
    build_st_clip(root / "hf", bpe_path(), seed)
    return root / "hf", {}


def load_sentence_transformers(folder: Path, dtype: torch.dtype):
    from sentence_transformers import SentenceTransformer

    from .catalog import Reference

    text_model = SentenceTransformer(str(folder), device="cpu").to(dtype)
    image_folder = folder.parent / _IMAGE_FOLDER
    image_model = (SentenceTransformer(str(image_folder), device="cpu").to(dtype) if image_folder.is_dir()
                   else text_model)
    clip = image_model[0].model  # the transformers CLIPModel inside

    @torch.no_grad()
    def images(pixels):
        features = clip.get_image_features(pixel_values=pixels.to(dtype))
        return getattr(features, "pooler_output", features).float()

    @torch.no_grad()
    def texts(tokens):
        return text_model(dict(tokens))["sentence_embedding"].float()

    return Reference(images, text_model.tokenize, texts)
