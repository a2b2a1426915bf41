"""Handspring's weights folders, and the command line that makes and checks them.

A weights folder (what ``convert --out DIR`` writes) holds one model:

    config.json          model name, architecture, component files, source and licence
    image.safetensors    one file per modality: a feature loads only the files it needs
    text.safetensors
    merges.txt           tokenizer vocabulary (BPE merges)
    manifest.json        sha256 and size of every file above

Usage::

    python -m handspring_models.weights download clip_vit_b_32 [--out DIR]
    python -m handspring_models.weights convert SRC --model clip_vit_b_32 --out DIR
    python -m handspring_models.weights convert imagebind_huge.pth --model imagebind_huge --out DIR
    python -m handspring_models.weights verify DIR
    python -m handspring_models.weights random clip_vit_b_32 --out DIR   # demo/benchmark only
    python -m handspring_models.weights ensure clip_vit_b_32 --out DIR   # what `make run` uses
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

FORMAT = "handspring-weights/1"
CONFIG = "config.json"
MANIFEST = "manifest.json"
TOKENIZER = "merges.txt"


def _weights_root() -> Path:
    """``weights/`` in a checkout (beside pyproject.toml: ``make run``, the tests); for an installed
    package, ``$XDG_DATA_HOME/handspring/weights`` (``~/.local/share/...``), not site-packages."""
    import os

    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "weights"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "handspring" / "weights"


REPO_WEIGHTS = _weights_root()

# What `download` fetches for each model: the Hugging Face Hub repository of the official weights,
# or the official URL where the authors publish them only there.
HUB_SOURCES = {
    "clip_vit_b_32": {"repo_id": "openai/clip-vit-base-patch32", "license": "MIT"},
    "imagebind_huge": {"url": "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth",
                       "license": "CC BY-NC-SA 4.0 (non-commercial use only)"},
}
MODELS = tuple(HUB_SOURCES)


class WeightsError(RuntimeError):
    """A weights folder is missing, incomplete or corrupt; the message names the file."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_weights_dir(model: str) -> Path:
    """``$HANDSPRING_WEIGHTS_DIR`` if set, else ``weights/<model>/`` in this repository (installed:
    under ``~/.local/share/handspring/weights/``)."""
    import os

    env = os.environ.get("HANDSPRING_WEIGHTS_DIR")
    return Path(env) if env else REPO_WEIGHTS / model


# ---------------------------------------------------------------- reading

def read_config(folder: Path) -> dict:
    path = folder / CONFIG
    if not folder.is_dir():
        raise WeightsError(
            f"weights folder {folder} does not exist; make one with "
            "`python -m handspring_models.weights download <model>` (or `convert`), "
            "or point HANDSPRING_WEIGHTS_DIR at one"
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


def load_component(folder: Path, filename: str, dtype: torch.dtype,
                   mapped: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """One modality's tensors, cast to ``dtype``; the tensors named in ``mapped`` are left on
    the file, memory-mapped and as stored (see ``map_tensor``).

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
                    tensors[key] = _cast(tensor, dtype)
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

def write_folder(out: Path, model: str, architecture: dict, components: dict[str, dict[str, torch.Tensor]],
                 merges: Path, source: str, license: str) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for modality, tensors in components.items():
        name = f"{modality}.safetensors"
        save_file({k: v.float().contiguous() for k, v in tensors.items()}, out / name, metadata={"model": model})
        files[modality] = name
    if merges.suffix == ".gz":
        import gzip

        with gzip.open(merges, "rb") as src, open(out / TOKENIZER, "wb") as dst:
            shutil.copyfileobj(src, dst)
    elif merges.resolve() != (out / TOKENIZER).resolve():
        shutil.copyfile(merges, out / TOKENIZER)
    config = {
        "format": FORMAT,
        "model": model,
        "architecture": architecture,
        "components": files,
        "tokenizer": TOKENIZER,
        "source": source,
        "license": license,
    }
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    names = sorted([CONFIG, TOKENIZER, *files.values()])
    manifest = {"files": {n: {"sha256": sha256_file(out / n), "bytes": (out / n).stat().st_size} for n in names}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    for name in [*names, MANIFEST]:
        (out / name).chmod(0o644)  # readable by the unprivileged user that serves them


def find_merges(src: Path, explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    folder = src if src.is_dir() else src.parent
    for name in ("merges.txt", "bpe_simple_vocab_16e6.txt.gz"):
        if (folder / name).is_file():
            return folder / name
    # OpenAI's .pt carries no vocabulary: take the one published beside the official HF weights.
    return Path(_hub_download(HUB_SOURCES["clip_vit_b_32"]["repo_id"], ["merges.txt"]) ) / "merges.txt"


def convert(src: Path, model: str, out: Path, merges: Path | None = None, source: str | None = None,
            architecture=None) -> None:
    """``architecture``: ImageBind only, an ``ImageBindConfig`` for checkpoints other than
    imagebind_huge (head counts cannot be read off the tensors)."""
    from .. import clip_checkpoint as ckpt

    if model not in MODELS:
        raise WeightsError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    if model == "imagebind_huge":
        return convert_imagebind(src, out, merges, source, architecture)
    if src.is_dir():
        if not (src / "config.json").is_file():
            raise WeightsError(f"{src}: a Hugging Face CLIPModel folder needs config.json")
        config, state = ckpt.load_hf_folder(src)
        default_source = f"huggingface:{src.name}"
    elif src.is_file():
        state = ckpt.load_openai_state_dict(src)
        config = ckpt.config_from_openai(state)
        default_source = f"openai:{src.name}"
    else:
        raise WeightsError(f"{src} does not exist")
    merges_path = find_merges(src, merges)
    _check_loads(config, state)
    write_folder(out, model, config.to_dict(), ckpt.split_by_modality(state), merges_path,
                 source if source is not None else default_source, HUB_SOURCES[model]["license"])


def convert_imagebind(src: Path, out: Path, merges: Path | None = None, source: str | None = None,
                      architecture=None) -> None:
    """The official ``imagebind_huge.pth`` -> one file per modality (vision, text, audio, depth,
    thermal, imu). Its vocabulary is CLIP's (``bpe_simple_vocab_16e6.txt.gz`` in ImageBind's repo)."""
    from .. import imagebind_checkpoint as ckpt

    if not src.is_file():
        raise WeightsError(f"{src} does not exist (expected the official imagebind_huge.pth)")
    try:
        state = ckpt.load_official(src)
        parts = ckpt.split_by_modality(state)
        config = architecture or ckpt.config_from_state(state)
        ckpt.check_fits(config, parts)
    except (ValueError, RuntimeError, OSError) as e:
        raise WeightsError(f"{src}: {e}") from None
    write_folder(out, "imagebind_huge", config.to_dict(), parts, find_merges(src, merges),
                 source if source is not None else f"official:{src.name}", HUB_SOURCES["imagebind_huge"]["license"])


def _check_loads(config, state: dict[str, torch.Tensor]) -> None:
    """Fail at convert time, not at serve time, if the tensors do not fit the architecture."""
    from ..clip import CLIP

    with torch.device("meta"):
        model = CLIP(config)
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise WeightsError(f"checkpoint does not fit the architecture: {problem}")


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


def _hub_download(repo_id: str, patterns: list[str]) -> str:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as e:
        raise WeightsError(
            f"could not download {patterns} from the Hugging Face Hub repository {repo_id}: "
            f"{type(e).__name__}: {e}. Check the network (and HF_ENDPOINT / HF_TOKEN if you use a mirror), "
            "or download the files yourself and run `convert`."
        ) from None


def _url_download(url: str) -> Path:
    """A checkpoint published at a plain URL, kept in torch hub's cache (``$TORCH_HOME``) so a
    second ``download`` does not fetch it again."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=sys.stderr.isatty())
    except Exception as e:
        raise WeightsError(f"could not download {url}: {type(e).__name__}: {e}. Check the network, or "
                           f"download it yourself and run `convert`.") from None
    return path


def _write_atomically(out: Path, write) -> None:
    """Write a folder aside, then move it into place: an interrupted run leaves no half folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staging = Path(tmp) / "out"
        write(staging)
        out.mkdir(parents=True, exist_ok=True)
        for f in staging.iterdir():
            shutil.move(str(f), out / f.name)
    print(f"wrote {out}", file=sys.stderr)  # stdout is for `ensure`'s answer


def download(model: str, out: Path) -> None:
    if model not in MODELS:
        raise WeightsError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    if "url" in HUB_SOURCES[model]:
        url = HUB_SOURCES[model]["url"]
        convert(_url_download(url), model, out, source=f"official:{url}")
        return
    repo_id = HUB_SOURCES[model]["repo_id"]
    folder = Path(_hub_download(repo_id, ["config.json", "merges.txt", "vocab.json", "model.safetensors"]))
    if not (folder / "model.safetensors").is_file():  # older snapshots have only the pickle
        folder = Path(_hub_download(repo_id, ["config.json", "merges.txt", "vocab.json", "pytorch_model.bin"]))
    convert(folder, model, out, source=f"huggingface:{repo_id}@{folder.name}")  # folder: the revision


def random_weights(model: str, out: Path, seed: int = 0) -> None:
    """A random-weight model of the real shape: to try the API or benchmark without the real
    weights. Its vectors mean nothing; config.json says so (``source: random``)."""
    from .. import clip_checkpoint as ckpt
    from ..clip import CLIP, CLIPConfig

    if model == "imagebind_huge":
        return random_imagebind(out, seed)
    torch.manual_seed(seed)
    config = CLIPConfig()
    model_ = CLIP(config)
    for name, p in model_.named_parameters():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            torch.nn.init.ones_(p)
        elif name.endswith("bias"):
            torch.nn.init.zeros_(p)
        else:
            torch.nn.init.normal_(p, std=p.shape[-1] ** -0.5 if p.dim() > 1 else 0.02)
    write_folder(out, model, config.to_dict(), ckpt.split_by_modality(model_.state_dict()),
                 _stand_in_merges(out, config.text.vocab_size), _random_source(seed), license="none")


def random_imagebind(out: Path, seed: int = 0, config=None) -> None:
    """``random`` for ImageBind: the official layout filled by ``imagebind_checkpoint.random_state_dict``
    (the same tensors for a seed everywhere), split per modality like a converted checkpoint."""
    from .. import imagebind_checkpoint as ckpt
    from ..imagebind import ImageBindConfig

    config = config or ImageBindConfig()
    parts = ckpt.split_by_modality(ckpt.random_state_dict(config, seed))
    write_folder(out, "imagebind_huge", config.to_dict(), parts, _stand_in_merges(out, config.vocab_size),
                 _random_source(seed), license="none")


def _random_source(seed: int) -> str:
    return f"random (seed {seed}): NOT a trained model, its vectors mean nothing"


def _stand_in_merges(out: Path, vocab_size: int) -> Path:
    """A stand-in vocabulary of the right size (byte pairs), so no vocabulary file is needed offline."""
    from ..tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    pairs = [f"{a} {b}" for a in chars for b in chars][: vocab_size - 2 * 256 - 2]
    out.mkdir(parents=True, exist_ok=True)
    merges = out / TOKENIZER
    merges.write_text("#version: 0.2 (random demo)\n" + "\n".join(pairs) + "\n", encoding="utf-8")
    return merges


def ensure(model: str, out: Path) -> Path:
    """The weights folder `make run` serves: $HANDSPRING_WEIGHTS_DIR if set, else ``out``,
    downloaded on first use; offline, a clearly labelled random-weight demo model."""
    import os

    if os.environ.get("HANDSPRING_WEIGHTS_DIR"):
        return Path(os.environ["HANDSPRING_WEIGHTS_DIR"])
    if (out / CONFIG).is_file():
        return out
    try:
        _write_atomically(out, lambda staging: download(model, staging))
        return out
    except WeightsError as e:
        demo = out.with_name(f"{out.name}-random-demo")
        if not (demo / MANIFEST).is_file():
            _write_atomically(demo, lambda staging: random_weights(model, staging))
        print(f"\n*** {e}\n*** Serving a RANDOM-WEIGHT demo model from {demo}: the API works, the vectors mean "
              f"nothing. Get the real weights with `make download` (needs internet) or set "
              f"HANDSPRING_WEIGHTS_DIR.\n", file=sys.stderr)
        return demo
