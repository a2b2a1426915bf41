"""The CLIP family: OpenAI's architecture (a ViT and a causal text transformer) and the
checkpoints published in its shape.

- ``model.py``: the network, named as OpenAI's checkpoint is.
- ``checkpoint.py``: reading the published formats into OpenAI's names.
- ``embedder.py``: the loaded feature behind the two-step interface.

This module is the family's face to the registry: ``Embedder``, ``convert``, ``random_weights``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..weights import WeightsError, random_source, state_mismatch, write_folder
from .embedder import CLIPEmbedder as Embedder
from .model import CLIP, CLIPConfig

__all__ = ["Embedder", "convert", "random_weights", "missing_download_files"]

MERGES = "merges.txt"


def convert(src: Path, spec, out: Path, merges: Path | None = None, source: str | None = None,
            image_src: Path | None = None) -> None:
    """A checkpoint as the entry's ``source.format`` publishes it -> a weights folder:
    ``open_clip`` (a Hub folder with ``open_clip_config.json``), ``sentence_transformers`` (a
    folder with ``modules.json``), else a Hugging Face ``CLIPModel`` folder or OpenAI's ``.pt``.
    CLIP's BPE merges come from ``merges``, else from beside ``src`` (``merges.txt`` or OpenAI's
    ``bpe_simple_vocab_16e6.txt.gz``); a ``tokenizer.json`` tokenizer from the model's folder."""
    from . import checkpoint as ckpt
    from . import library_formats

    if image_src is not None:
        raise WeightsError(f"{spec.name} is published as one folder: --image-src is not used")
    tokenizer_folder = src if src.is_dir() else src.parent
    try:
        if spec.source.format == "open_clip":
            config, state = library_formats.from_open_clip(src)
            default_source = f"open_clip:{src.name}"
        elif spec.source.format == "sentence_transformers":
            config, state, tokenizer_folder = library_formats.from_sentence_transformers(src)
            default_source = f"sentence_transformers:{src.name}"
        elif src.is_dir():
            if not (src / "config.json").is_file():
                raise WeightsError(f"{src}: a Hugging Face CLIPModel folder needs config.json")
            config, state = ckpt.load_hf_folder(src)
            default_source = f"huggingface:{src.name}"
        else:
            state = ckpt.load_openai_state_dict(src)
            config = ckpt.config_from_openai(state)
            default_source = f"openai:{src.name}"
    except ValueError as e:  # CheckpointError and the library formats' errors
        raise WeightsError(str(e)) from None
    _check_fits(config, state)
    write_folder(out, spec, config.to_dict(), ckpt.split_by_modality(state),
                 _tokenizer_files(spec, src, tokenizer_folder, merges),
                 source if source is not None else default_source)


def _tokenizer_files(spec, src: Path, folder: Path, merges: Path | None) -> dict[str, Path]:
    """The entry's tokenizer files: CLIP's BPE merges (ours), or a ``tokenizer.json`` read with
    Hugging Face ``tokenizers`` (sentence-transformers' CLIP runs transformers' tokenizer)."""
    if spec.tokenizer.kind == "clip_bpe":
        return {MERGES: find_merges(src, spec, merges)}
    files = {name: folder / name for name in spec.tokenizer.files}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise WeightsError(f"the tokenizer's files are missing: {', '.join(missing)}")
    return files


def find_merges(src: Path, spec, explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    folder = src if src.is_dir() else src.parent
    for name in (MERGES, "bpe_simple_vocab_16e6.txt.gz"):
        if (folder / name).is_file():
            return folder / name
    # OpenAI's .pt carries no vocabulary: take it from where the registry says it is published.
    from ..weights.hub import hub_download

    return Path(hub_download(spec.tokenizer.options["published_in"], [MERGES])) / MERGES


def missing_download_files(spec, folder: Path) -> list[str]:
    """Older Hub snapshots have only the pickle: fetch it instead of the safetensors file."""
    if spec.source.format == "open_clip":
        if (folder / "open_clip_model.safetensors").is_file():
            return []
        return ["open_clip_config.json", "open_clip_pytorch_model.bin"]
    if spec.source.format == "sentence_transformers":
        return []  # its file patterns take whichever weights file the module folder has
    if (folder / "model.safetensors").is_file():
        return []
    return [name for name in spec.source.files if name != "model.safetensors"] + ["pytorch_model.bin"]


def _check_fits(config: CLIPConfig, state: dict[str, torch.Tensor]) -> None:
    """Fail at convert time, not at serve time, if the tensors do not fit the architecture."""
    with torch.device("meta"):
        model = CLIP(config)
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise WeightsError(f"checkpoint does not fit the architecture: {problem}")


def random_weights(spec, out: Path, seed: int = 0, architecture: CLIPConfig | None = None) -> None:
    """The entry's shape (or ``architecture``), random: LayerNorm gains 1, biases 0, matrices
    scaled by 1/sqrt(fan-in), with a stand-in vocabulary of the right size."""
    from . import checkpoint as ckpt

    config = architecture or CLIPConfig.from_dict(spec.architecture)
    torch.manual_seed(seed)
    model = CLIP(config)
    for name, p in model.named_parameters():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            torch.nn.init.ones_(p)
        elif name.endswith("bias"):
            torch.nn.init.zeros_(p)
        else:
            torch.nn.init.normal_(p, std=p.shape[-1] ** -0.5 if p.dim() > 1 else 0.02)
    out.mkdir(parents=True, exist_ok=True)
    if spec.tokenizer.kind == "clip_bpe":
        tokenizer = {MERGES: stand_in_merges(out / MERGES, config.text.vocab_size)}
    else:  # a tokenizer.json (sentence-transformers' CLIP): a stand-in in CLIP's special-token layout
        from ..text.stand_in import stand_in_tokenizer

        tokenizer = {name: stand_in_tokenizer(out / name, "clip") for name in spec.tokenizer.files}
    write_folder(out, spec, config.to_dict(), ckpt.split_by_modality(model.state_dict()), tokenizer,
                 random_source(seed), license="none")


def stand_in_merges(path: Path, vocab_size: int) -> Path:
    """A stand-in BPE vocabulary of the right size (byte pairs), so no vocabulary file is needed offline."""
    from ..text.clip_bpe import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    pairs = [f"{a} {b}" for a in chars for b in chars][: vocab_size - 2 * 256 - 2]
    path.write_text("#version: 0.2 (random demo)\n" + "\n".join(pairs) + "\n", encoding="utf-8")
    return path
