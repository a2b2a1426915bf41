"""Making weights folders for any model of the registry: convert a published checkpoint,
download one and convert it, write a random one of the real shape, or make sure one is there.
Each model's family does the reading (``handspring_models.<family>.convert``); this module finds
the family and the files."""

from __future__ import annotations

import sys
from pathlib import Path

from ..registry import UnknownModelError, find_model
from . import CONFIG, MANIFEST, WeightsError, write_atomically
from .hub import hub_download, url_download


def _spec(model: str):
    try:
        return find_model(model)
    except UnknownModelError as e:
        raise WeightsError(str(e)) from None


def convert(src: Path, model: str, out: Path, **options) -> None:
    """A checkpoint in the model's published format -> a weights folder in ``out``. ``options``
    are the family's (e.g. ``merges=`` for a vocabulary kept elsewhere, ``architecture=`` for an
    ImageBind other than huge, ``image_src=`` for a model published as two folders)."""
    spec = _spec(model)
    src = Path(src)
    if not src.exists():
        raise WeightsError(f"{src} does not exist")
    spec.family_module().convert(src, spec, Path(out), **{k: v for k, v in options.items() if v is not None})


def download(model: str, out: Path) -> None:
    """Fetch the model from where its entry says (the Hugging Face Hub or the authors' URL) and convert it."""
    spec = _spec(model)
    source = spec.source
    if source.url:
        convert(url_download(source.url), spec.name, out, source=f"official:{source.url}")
        return
    folder = Path(hub_download(source.repo_id, list(source.files)))
    fetch_more = getattr(spec.family_module(), "missing_download_files", None)
    if fetch_more is not None and (more := fetch_more(spec, folder)):  # e.g. only the older pickle is there
        folder = Path(hub_download(source.repo_id, more))
    extra = getattr(spec.family_module(), "download_options", None)
    options = extra(spec) if extra is not None else {}  # e.g. the image tower's folder, published apart
    convert(folder, spec.name, out, source=f"huggingface:{source.repo_id}@{folder.name}",  # folder: the revision
            **options)


def random_weights(model: str, out: Path, seed: int = 0, architecture=None) -> None:
    """A random-weight model of the real shape (or of ``architecture``, the family's config): to
    try the API or benchmark without the real weights. Its vectors mean nothing; config.json
    says so (``source: random ...``)."""
    spec = _spec(model)
    spec.family_module().random_weights(spec, Path(out), seed, architecture=architecture)


def ensure(model: str, out: Path) -> Path:
    """The weights folder `make run` serves: ``out`` if it holds one, else downloaded there;
    offline, a clearly labelled random-weight demo model beside it."""
    spec = _spec(model)
    if (out / CONFIG).is_file():
        return out
    try:
        write_atomically(out, lambda staging: download(spec.name, staging))
        return out
    except WeightsError as e:
        demo = out.with_name(f"{out.name}-random-demo")
        if not (demo / MANIFEST).is_file():
            write_atomically(demo, lambda staging: random_weights(spec.name, staging))
        print(f"\n*** {e}\n*** Serving a RANDOM-WEIGHT demo model from {demo}: the API works, the vectors mean "
              f"nothing. Get the real weights with `make download` (needs internet) or set "
              f"HANDSPRING_WEIGHTS_DIR.\n", file=sys.stderr)
        return demo
