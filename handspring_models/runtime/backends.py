"""Which engine runs the model's forward pass.

- ``torch`` (default): our PyTorch modules, eagerly, with prepacked oneDNN weights.
- ``openvino``: the same modules, converted once to OpenVINO and run by its CPU plugin
  (``handspring_models.runtime.openvino_towers``). Our PyTorch code stays the definition of the
  model; tokenizing, preprocessing and batching do not change. Needs the ``openvino`` extra.
"""

from __future__ import annotations

import importlib.util

BACKENDS = ("torch", "openvino")


class BackendUnavailableError(ValueError):
    """The requested backend cannot run here (its package is not installed, or the model's
    family has no tower it can convert)."""


def resolve(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "openvino" and importlib.util.find_spec("openvino") is None:
        raise BackendUnavailableError(
            "the openvino backend needs the openvino package: pip install 'handspring[openvino]'")
    return backend
