"""The reference libraries for the CLIP family's parity tests, importable in this environment.

open_clip imports torchvision when its package is imported (for its training transforms and one
batch-norm helper), and PyPI's torchvision does not load beside torch 2.13. Neither its model nor
its tokenizer code uses torchvision, so ``import_open_clip`` puts a stand-in in ``sys.modules``
first: names that exist, and that raise if anything calls them. The parity tests feed open_clip
pixels from transformers' image processor at OpenAI's crop offsets (what open_clip's torchvision
pipeline computes), so no transform is ever run.
"""

from __future__ import annotations

import importlib
import sys
import types


class _AnyAttribute(type):
    """Class attributes (``InterpolationMode.BICUBIC``) are stand-ins too."""

    def __getattr__(cls, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return type(attr, (_Unavailable,), {})


class _Unavailable(metaclass=_AnyAttribute):
    """Any torchvision name: importable, unusable."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is a test stand-in here (tests/reference_libraries.py): "
                           "open_clip's transforms cannot run")


def _stand_in_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return type(attr, (_Unavailable,), {})

    module.__getattr__ = __getattr__
    module.__path__ = []  # a package, so its submodules can be imported
    return module


_STAND_IN = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
             "torchvision.ops", "torchvision.ops.misc")


def _drop_torchvision() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def import_open_clip():
    """open_clip, imported with the stand-in where torchvision does not load. The stand-in is in
    ``sys.modules`` only while open_clip's modules import (they keep the names they bound), so
    transformers, imported first, still sees no torchvision and keeps its PIL image processors."""
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"]
    import transformers  # noqa: F401  (its own torchvision probe must run without the stand-in)

    try:
        importlib.import_module("torchvision")
        stand_in = False
    except Exception:  # ImportError, or the RuntimeError of a torchvision built for another torch
        _drop_torchvision()
        stand_in = True
    if stand_in:
        for name in _STAND_IN:
            sys.modules[name] = _stand_in_module(name)
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, sys.modules[name])
    try:
        import open_clip
    finally:
        if stand_in:
            _drop_torchvision()
    return open_clip
