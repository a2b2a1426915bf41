"""Handspring's weights folders: reading, writing and checking them.

A weights folder (what ``convert --out DIR`` writes) holds one model:

    config.json          model name, architecture, component files, tokenizer files, source and licence
    image.safetensors    one file per component: a feature loads only the files its modalities need
    text.safetensors
    merges.txt           the tokenizer's files, as the registry entry names them
    manifest.json        sha256 and size of every file above

The command line (``python -m handspring_models.weights``) makes them: see ``cli``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT = "handspring-weights/1"
CONFIG = "config.json"
MANIFEST = "manifest.json"


class WeightsError(RuntimeError):
    """A weights folder is missing, incomplete or corrupt; the message names the file."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def home() -> Path:
    """Where the library keeps models by default: ``$HANDSPRING_HOME``, else
    ``$XDG_CACHE_HOME/handspring``, else ``~/.cache/handspring``."""
    if os.environ.get("HANDSPRING_HOME"):
        return Path(os.environ["HANDSPRING_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "handspring"


def default_weights_dir(model: str) -> Path:
    """The folder ``load`` reads when given none: ``<home>/<model>`` (see ``home``)."""
    return home() / model


# ---------------------------------------------------------------- reading

def read_config(folder: Path) -> dict:
    path = folder / CONFIG
    if not folder.is_dir():
        raise WeightsError(
            f"weights folder {folder} does not exist; make one with "
            "`python -m handspring_models.weights download <model> --out DIR` (or `convert`), "
            "and pass that folder"
        )
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{path} is missing: {folder} is not a weights folder written by `convert`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is corrupt: {e}") from None
    if config.get("format") != FORMAT:
        raise WeightsError(f"{path}: format {config.get('format')!r} is not {FORMAT!r}")
    return config


def load_component(folder: Path, filename: str, dtype: torch.dtype, mapped: tuple[str, ...] = (),
                   convert: Callable[[str, torch.Tensor], Any] | None = None) -> dict[str, Any]:
    """One modality's tensors, cast to ``dtype``; the tensors named in ``mapped`` are left on
    the file, memory-mapped and as stored (see ``map_tensor``). ``convert(name, tensor)``, where
    given, sees each other tensor as stored, as it is read: what it returns is kept instead of the
    cast, unless that is None. A model quantized that way never holds all its weights in full
    precision at once.

    Pages of a memory-mapped file count as resident until it is unmapped, so the file is reopened
    every ~64 MiB: the peak stays near the loaded model's size instead of model + whole file."""
    from safetensors import SafetensorError, safe_open

    path = folder / filename
    if not path.is_file():
        raise WeightsError(f"{path} is missing")
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(path, framework="pt") as f:
            stored = f.keys()
        keys = [k for k in stored if k not in mapped]
        missing = [k for k in mapped if k not in stored]
        if missing:
            raise WeightsError(f"{path} has no tensor {missing[0]!r}")
        while len(tensors) < len(keys):
            read = 0
            with safe_open(path, framework="pt") as f:
                for key in keys[len(tensors):]:
                    tensor = f.get_tensor(key)
                    converted = convert(key, tensor) if convert is not None else None
                    tensors[key] = _cast(tensor, dtype) if converted is None else converted
                    read += tensor.numel() * tensor.element_size()
                    if read >= _REOPEN_BYTES:
                        break
        for key in mapped:
            tensors[key] = map_tensor(path, key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path} is corrupt or unreadable: {e}") from None
    return tensors


_REOPEN_BYTES = 64 << 20
_NUMPY_DTYPES = {"F32": ("float32", None), "F16": ("float16", None), "BF16": ("int16", torch.bfloat16)}


def map_tensor(path: Path, key: str) -> torch.Tensor:
    """One tensor of a safetensors file, memory-mapped on its own and read-only in effect
    (copy-on-write): only the pages that are read become resident. For lookup tables such as a
    token embedding, of which a text reads a few rows: 49408 x 512 floats that would otherwise be
    resident whole.

    The safetensors layout: an 8-byte little-endian header length, a JSON header giving each
    tensor's dtype, shape and byte range, then the data."""
    import numpy as np

    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    info = header.get(key)
    if not isinstance(info, dict) or info.get("dtype") not in _NUMPY_DTYPES:
        raise ValueError(f"{key!r} is not a float32, float16 or bfloat16 tensor in {path}")
    start, end = info["data_offsets"]
    shape = tuple(info["shape"])
    np_dtype, view_as = _NUMPY_DTYPES[info["dtype"]]
    if end - start != int(np.prod(shape)) * np.dtype(np_dtype).itemsize:
        raise ValueError(f"{key!r} in {path}: its byte range does not fit its shape")
    array = np.memmap(path, dtype=np_dtype, mode="c", offset=8 + header_len + start, shape=shape)
    tensor = torch.from_numpy(array)  # keeps the mapping alive for as long as the tensor lives
    return tensor.view(view_as) if view_as is not None else tensor


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Always a copy: a tensor left on the file mapping keeps the whole mapping (and every page
    # read through it) resident for as long as the model lives.
    return tensor.to(dtype if tensor.is_floating_point() else tensor.dtype, copy=True)


def manifest_sha256(folder: Path) -> str | None:
    path = folder / MANIFEST
    return sha256_file(path) if path.is_file() else None


def verify(folder: Path) -> list[str]:
    """Problems found against the manifest (an empty list means the folder is intact)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return [f"{folder / MANIFEST} is missing"]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [f"{folder / MANIFEST} is corrupt: {e}"]
    problems = []
    for name, entry in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{path} does not match its sha256 in the manifest")
    return problems


# ---------------------------------------------------------------- writing

def write_folder(out: Path, spec, architecture: dict, components: dict[str, dict[str, torch.Tensor]],
                 tokenizer_files: dict[str, Path], source: str, license: str | None = None,
                 extra: dict | None = None) -> None:
    """Write a weights folder for the registry entry ``spec``: one safetensors file per
    component, the tokenizer's files (``name in the folder -> where to copy it from``; a ``.gz``
    source is decompressed), config.json and the manifest. ``extra``: more config.json keys."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for component, tensors in components.items():
        name = f"{component}.safetensors"
        save_file({k: v.float().contiguous() for k, v in tensors.items()}, out / name, metadata={"model": spec.name})
        files[component] = name
    for name, src in tokenizer_files.items():
        if src.suffix == ".gz":
            import gzip

            with gzip.open(src, "rb") as f, open(out / name, "wb") as dst:
                shutil.copyfileobj(f, dst)
        elif src.resolve() != (out / name).resolve():
            shutil.copyfile(src, out / name)
    config = {
        "format": FORMAT,
        "model": spec.name,
        "family": spec.family,
        "architecture": architecture,
        "components": files,
        "tokenizer": sorted(tokenizer_files),
        "source": source,
        "license": license if license is not None else spec.license,
        **(extra or {}),
    }
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    names = sorted([CONFIG, *tokenizer_files, *files.values()])
    manifest = {"files": {n: {"sha256": sha256_file(out / n), "bytes": (out / n).stat().st_size} for n in names}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    for name in [*names, MANIFEST]:
        (out / name).chmod(0o644)  # readable by the unprivileged user that serves them


def state_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str | None:
    """What differs between two state dicts' names and shapes (a few of each kind), or None."""
    want = {k: tuple(v.shape) for k, v in expected.items()}
    have = {k: tuple(v.shape) for k, v in got.items()}
    if want == have:
        return None
    missing = sorted(set(want) - set(have))[:5]
    extra = sorted(set(have) - set(want))[:5]
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])[:5]
    return f"missing {missing}, unexpected {extra}, wrong shapes {wrong}"


def random_source(seed: int) -> str:
    return f"random (seed {seed}): NOT a trained model, its vectors mean nothing"


def write_atomically(out: Path, write) -> None:
    """Write a folder aside, then move it into place: an interrupted run leaves no half folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staging = Path(tmp) / "out"
        write(staging)
        out.mkdir(parents=True, exist_ok=True)
        for f in staging.iterdir():
            shutil.move(str(f), out / f.name)
    print(f"wrote {out}", file=sys.stderr)  # stdout is for `ensure`'s answer


from .build import convert, download, ensure, random_weights  # noqa: E402,F401 - re-exported; they use what is above
