"""(e) The catalog: every model of the registry that has a reference here, the model alone, ours
against its reference library on the same random full-size weights and the same inputs: images/s
and texts/s at batch 1 and 32, per precision, timed in alternation.

A model's reference says how to build its published checkpoint with the reference library, and
how that library embeds prepared pixels and its own tokenization of the same texts (tokenizing is
not timed on either side). Models without a reference here are listed as not measured.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .model_bench import timeit_group

_STAMP = "bench-catalog.json"


@dataclass
class Reference:
    """One model's reference, built on weights that our converter also read."""

    images: Callable[[torch.Tensor], torch.Tensor]  # prepared pixels [b, 3, s, s] -> features
    tokenize: Callable[[list[str]], dict]
    texts: Callable[[dict], torch.Tensor]


def _hf_clip(spec, root: Path, seed: int, quick: bool, log) -> Path:
    """A transformers CLIPModel of the entry's shape (a tiny one in quick mode), saved as
    published and converted with our converter; returns the save_pretrained folder."""
    from tests.conftest import TINY, build_hf_clip
    from tests.test_clip_variants import hf_config

    from .checkpoint import bpe_path, save_processor

    build_hf_clip(TINY if quick else hf_config(spec.name), root / "hf", bpe_path(), seed=seed)
    save_processor(root / "hf", bpe_path())
    return root / "hf"


def _hf_clip_reference(folder: Path, dtype: torch.dtype) -> Reference:
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(folder).eval().to(dtype)
    tokenizer = CLIPTokenizer.from_pretrained(folder)

    @torch.no_grad()
    def images(pixels):
        return model.visual_projection(model.vision_model(pixel_values=pixels.to(dtype))[1]).float()

    @torch.no_grad()
    def texts(tokens):
        return model.text_projection(model.text_model(**tokens)[1]).float()

    return Reference(images, lambda t: tokenizer(t, padding=True, truncation=True, return_tensors="pt"), texts)


def _hf_siglip(spec, root: Path, seed: int, quick: bool, log) -> Path:
    """A transformers SiglipModel of the entry's shape (tiny in quick mode), with its tokenizer and
    preprocessor files, saved as published."""
    from tests.siglip.conftest import build_for_entry

    build_for_entry(spec, root / "hf", seed, tiny=quick)
    return root / "hf"


def _hf_siglip_reference(folder: Path, dtype: torch.dtype) -> Reference:
    """transformers' SiglipModel as its model card runs it: texts padded to 64 (SigLIP 2's
    lower-cased, as ours), no attention mask, features not normalized."""
    import warnings

    from transformers import AutoTokenizer, SiglipModel

    model = SiglipModel.from_pretrained(folder).eval().to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(folder)
    lower = type(tokenizer).__name__ != "SiglipTokenizer"  # SigLIP 2: Gemma's tokenizer

    def tokenize(texts):
        texts = [t.lower() for t in texts] if lower else texts
        ids = tokenizer(texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
        return {"input_ids": ids["input_ids"]}

    @torch.no_grad()
    def images(pixels):
        return model.get_image_features(pixel_values=pixels.to(dtype)).pooler_output.float()

    @torch.no_grad()
    def texts(tokens):
        return model.get_text_features(**tokens).pooler_output.float()

    return Reference(images, tokenize, texts)


# published format -> (build a checkpoint with the reference library, load the reference)
REFERENCES: dict[str, tuple[Callable, Callable]] = {
    "hf_clip": (_hf_clip, _hf_clip_reference),
    "hf_siglip": (_hf_siglip, _hf_siglip_reference),
}


def _library_references() -> dict[str, tuple[Callable, Callable]]:
    from . import catalog_libraries as lib

    return {"open_clip": (lib.build_open_clip, lib.load_open_clip),
            "sentence_transformers": (lib.build_sentence_transformers, lib.load_sentence_transformers)}


REFERENCES.update(_library_references())


def ensure_model(spec, cache: Path, quick: bool, log) -> tuple[Path, Path]:
    """(reference folder, our weights folder) for an entry, built once per size and seed."""
    import transformers

    from handspring_models.weights import convert

    build, _ = REFERENCES[spec.source.format]
    seed = 21
    root = cache / f"catalog-{spec.name}-{'tiny' if quick else 'full'}-seed{seed}"
    stamp = {"model": spec.name, "quick": quick, "seed": seed, "transformers": transformers.__version__,
             "architecture": dict(spec.architecture)}
    if (root / _STAMP).is_file() and json.loads((root / _STAMP).read_text()) == stamp:
        return root / "hf", root / "ours"
    log(f"  building {spec.name} ({'tiny' if quick else 'full size'}, random weights) in {root} ...")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    built = build(spec, root, seed, quick, log)
    folder, options = built if isinstance(built, tuple) else (built, {})  # options: e.g. a second folder
    convert(folder, spec.name, root / "ours", **options)
    (root / _STAMP).write_text(json.dumps(stamp) + "\n")
    return folder, root / "ours"


def run(cache: Path, precisions: list[str], quick: bool, models: list[str] | None = None, log=print) -> dict:
    import handspring_models

    from . import inputs as bench_inputs

    specs = [s for s in handspring_models.list_models() if models is None or s.name in models]
    batches = [1, 4] if quick else [1, 32]
    min_time = 0.05 if quick else 2.0
    result: dict = {"batch_sizes": batches, "precisions": precisions, "threads": torch.get_num_threads(),
                    "size": "tiny" if quick else "full", "models": {}}
    captions = bench_inputs.captions(quick)
    photos = bench_inputs.photos(cache, quick)
    for spec in specs:
        if spec.source.format not in REFERENCES:
            result["models"][spec.name] = {"skipped": f"no reference for the {spec.source.format} format here"}
            continue
        log(f"  {spec.name}")
        try:
            result["models"][spec.name] = _measure(spec, cache, precisions, batches, min_time, quick, photos,
                                                   captions, log)
        except Exception as e:  # noqa: BLE001 - one model's failure is reported, the others still run
            result["models"][spec.name] = {"error": f"{type(e).__name__}: {e}"}
            log(f"    error: {type(e).__name__}: {e}")
    return result


def _measure(spec, cache, precisions, batches, min_time, quick, photos, captions, log) -> dict:
    import handspring_models

    ref_folder, ours_folder = ensure_model(spec, cache, quick, log)
    _, load_reference = REFERENCES[spec.source.format]
    rows = []
    exact = handspring_models.load(spec.name, ours_folder, precision="fp32", normalize=False)
    pixel_pool = [exact.prepare("image", ph.data) for ph in photos[:8]]
    for p in precisions:
        ours = exact if p == "fp32" else handspring_models.load(spec.name, ours_folder, precision=p, normalize=False)
        reference = load_reference(ref_folder, ours.dtype)
        for batch in batches:
            pixels = [pixel_pool[i % len(pixel_pool)] for i in range(batch)]
            texts = [captions[(i + 3) % len(captions)] for i in range(batch)]
            tokens = reference.tokenize(texts)
            ids = [ours.prepare("text", t) for t in texts]
            for modality, pair in (
                ("image", (functools.partial(reference.images, torch.stack(pixels)),
                           functools.partial(ours.encode, "image", pixels))),
                ("text", (functools.partial(reference.texts, tokens), functools.partial(ours.encode, "text", ids))),
            ):
                theirs, mine = timeit_group(list(pair), min_time, min_reps=3)
                row = {"modality": modality, "precision": p, "batch": batch,
                       "reference_per_s": batch / theirs["median_s"], "handspring_per_s": batch / mine["median_s"]}
                row["ratio"] = row["handspring_per_s"] / row["reference_per_s"]
                rows.append(row)
                log(f"    {modality:5s} {p:4s} batch {batch:2d}: handspring {row['handspring_per_s']:7.1f}/s, "
                    f"reference {row['reference_per_s']:7.1f}/s ({row['ratio']:.2f}x)")
        del reference, ours
    return {"rows": rows, "reference": spec.source.format}


def format_catalog(catalog: dict) -> str:
    from .report import _sig, _table

    lines = [f"\n(e) CATALOG: the model alone, ours vs its reference library on the same random "
             f"{catalog['size']} weights, {catalog['threads']} threads (items/s; ratio = ours / reference)"]
    rows = []
    for name, entry in catalog["models"].items():
        if "rows" not in entry:
            rows.append([name, "-", "-", "-", "-", "-", entry.get("skipped") or entry.get("error", "")])
            continue
        for r in entry["rows"]:
            rows.append([name, r["modality"], r["precision"], str(r["batch"]), _sig(r["handspring_per_s"]),
                         _sig(r["reference_per_s"]), f"{r['ratio']:.2f}x"])
    lines.append(_table(["model", "input", "precision", "batch", "handspring", "reference", "ratio"], rows,
                        "lllrrrl"))
    return "\n".join(lines)
