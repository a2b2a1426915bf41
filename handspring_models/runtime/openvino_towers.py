"""Our PyTorch towers, run by OpenVINO's CPU plugin.

A tower (the image or the text encoder of one model) is traced from its ``nn.Module`` once by
``openvino.convert_model`` and saved as OpenVINO IR (``.xml`` + ``.bin``, float32 weights) in a
cache folder, keyed by the weights, the model code and the library versions. Later loads read the
IR and never touch the PyTorch weights. Precision is chosen when compiling: ``f32`` for the exact
mode, ``bf16`` where asked (OpenVINO runs it natively only on CPUs with AVX512-BF16 or AMX, and
runs f32 elsewhere).

Conversion is paid once, at the first load (or ahead, by ``python -m handspring_models.weights
compile``). OpenVINO's own cache of compiled blobs (``CACHE_DIR``, in ``compiled/`` inside the
IR's folder) makes later starts skip most of the compilation too: measured on a ViT-B/32, 0.6 s
instead of 1.4 s for both towers, at the same memory, for as much disk again as the IR (none
where that folder is read-only). A new conversion deletes the tower's IRs under other keys, blobs
included.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
_INFO = "tower.json"


def cache_key(manifest: str | None, code_files: Sequence[Path], tower: str) -> str:
    """What the IR depends on: the weights (their manifest), the code that defines the model, the
    converter's and PyTorch's versions."""
    import openvino

    digest = hashlib.sha256()
    for part in (manifest or "no-manifest", tower, openvino.__version__, torch.__version__):
        digest.update(part.encode() + b"\0")
    for path in sorted(code_files):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def convert(module: torch.nn.Module, example: tuple[torch.Tensor, ...], out: Path, extras: dict) -> None:
    """Trace ``module`` on ``example`` and save its IR in ``out`` (written beside it, then renamed
    into place, so that concurrent loads never see half a folder). Every input's batch dimension,
    and every integer input's other dimensions (token counts), stay dynamic."""
    import openvino as ov

    shapes = []
    for tensor in example:
        dims = [-1 if i == 0 or not tensor.is_floating_point() else n for i, n in enumerate(tensor.shape)]
        shapes.append((ov.PartialShape(dims), ov.Type.f32 if tensor.is_floating_point() else ov.Type.i64))
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every Python int it records (head sizes, token counts); the
        # dynamic dimensions above are what keep the graph general, so the warnings say nothing.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model = ov.convert_model(module, example_input=example, input=shapes)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        ov.save_model(model, staging / "tower.xml", compress_to_fp16=False)
        (staging / _INFO).write_text(json.dumps({"extras": extras}, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the cache from other users
        try:
            os.replace(staging, out)
        except OSError:  # another process put it there first: theirs is the same
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_extras(folder: Path) -> dict:
    return json.loads((folder / _INFO).read_text())["extras"]


def is_converted(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("tower.xml", "tower.bin", _INFO))


class CompiledTower:
    """One compiled tower, called like the PyTorch method it replaces: tensors in, a float32
    tensor out. One inference request, used by one caller at a time."""

    def __init__(self, folder: Path, precision: str, threads: int, blob_cache: Path | None):
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision]}
        if blob_cache is not None:
            config["CACHE_DIR"] = str(blob_cache)
        self.compiled = ov.Core().compile_model(folder / "tower.xml", "CPU", config)
        # What OpenVINO runs: a bf16 request runs f32 on a CPU without native bf16.
        self.runs_precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(
            self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(), "other")
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        arrays = [np.ascontiguousarray(t.numpy()) for t in inputs]
        with self._lock:
            out = self._request.infer(arrays, share_inputs=True)
            return torch.from_numpy(np.array(out[0], dtype=np.float32, copy=True))


def tower_folder(cache_root: Path, key: str, tower: str) -> Path:
    return cache_root / f"{tower}-{key}"


def load_tower(roots: Sequence[Path], key: str, tower: str, precision: str, threads: int,
               build: Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...], dict]]) -> tuple[CompiledTower, dict]:
    """The compiled tower and its extras. The IR is looked for under each of ``roots`` in turn
    (beside the weights, then the user cache); if none has it, ``build()`` gives the module, an
    example input and the extras, and it is converted into the first root this process can write."""
    for root in roots:
        folder = tower_folder(root, key, tower)
        if is_converted(folder):
            break
    else:
        folder = tower_folder(_first_writable(roots), key, tower)
        module, example, extras = build()
        convert(module, example, folder, extras)
        remove_stale(folder.parent, key, tower)
    # The compiled blobs live in the IR's folder, so they go with it; none where it is read-only (an
    # image's weights): there they would fill each container's own layer with a copy of the weights.
    blobs = _first_writable([folder / "compiled"], required=False)
    return CompiledTower(folder, precision, threads, blobs), read_extras(folder)


def remove_stale(root: Path, key: str, tower: str) -> list[Path]:
    """Delete the IRs of ``tower`` under other keys (older weights, code or versions): each is as
    large as the weights and would never be read again. A process still running one keeps its
    mapped copy (the files are unlinked, not overwritten)."""
    current = tower_folder(root, key, tower)
    stale = [p for p in root.glob(f"{tower}-*") if p.is_dir() and p != current
             and re.fullmatch(rf"{re.escape(tower)}-[0-9a-f]{{16}}", p.name)]  # not another one's staging folder
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def _first_writable(roots: Sequence[Path], required: bool = True) -> Path | None:
    for root in roots:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root
    if required:
        raise OSError(f"none of {', '.join(map(str, roots))} is writable, to cache the converted model in")
    return None
