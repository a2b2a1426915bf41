"""The ImageBind family: six trunks (vision, text, audio, depth, thermal, IMU) into one space.

- ``model.py``: the network, named as the official checkpoint is.
- ``checkpoint.py``: reading and splitting the official ``.pth``.
- ``embedder.py``: the loaded feature for seven input kinds (video shares the vision trunk).

This module is the family's face to the registry: ``Embedder``, ``convert``, ``random_weights``.
"""

from __future__ import annotations

from pathlib import Path

from ..weights import WeightsError, random_source, write_folder
from .embedder import ImageBindEmbedder as Embedder
from .model import ImageBindConfig

__all__ = ["Embedder", "convert", "random_weights"]


def convert(src: Path, spec, out: Path, merges: Path | None = None, source: str | None = None,
            architecture: ImageBindConfig | None = None) -> None:
    """The official ``imagebind_huge.pth`` -> one file per trunk. Its vocabulary is CLIP's
    (``bpe_simple_vocab_16e6.txt.gz`` in ImageBind's repository). ``architecture``: for
    checkpoints other than imagebind_huge (head counts cannot be read off the tensors)."""
    from ..clip import MERGES, find_merges
    from . import checkpoint as ckpt

    if not src.is_file():
        raise WeightsError(f"{src} is not a file (expected the official imagebind_huge.pth)")
    try:
        state = ckpt.load_official(src)
        parts = ckpt.split_by_modality(state)
        config = architecture or ckpt.config_from_state(state)
        ckpt.check_fits(config, parts)
    except (ValueError, RuntimeError, OSError) as e:
        raise WeightsError(f"{src}: {e}") from None
    write_folder(out, spec, config.to_dict(), parts, {MERGES: find_merges(src, spec, merges)},
                 source if source is not None else f"official:{src.name}")


def random_weights(spec, out: Path, seed: int = 0, architecture: ImageBindConfig | None = None) -> None:
    """The official layout filled by ``checkpoint.random_state_dict`` (the same tensors for a seed
    everywhere), split per trunk like a converted checkpoint."""
    from ..clip import MERGES, stand_in_merges
    from . import checkpoint as ckpt

    config = architecture or ImageBindConfig.from_dict(spec.architecture)
    parts = ckpt.split_by_modality(ckpt.random_state_dict(config, seed))
    out.mkdir(parents=True, exist_ok=True)
    write_folder(out, spec, config.to_dict(), parts, {MERGES: stand_in_merges(out / MERGES, config.vocab_size)},
                 random_source(seed), license="none")
