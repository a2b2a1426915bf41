"""Fetching published checkpoints: from the Hugging Face Hub, or from a plain URL."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from . import WeightsError


def hub_download(repo_id: str, patterns: list[str]) -> str:
    """The files of a Hub repository matching ``patterns``, in huggingface_hub's cache; returns
    the snapshot folder (named by the revision)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as e:
        raise WeightsError(
            f"could not download {patterns} from the Hugging Face Hub repository {repo_id}: "
            f"{type(e).__name__}: {e}. Check the network (and HF_ENDPOINT / HF_TOKEN if you use a mirror), "
            "or download the files yourself and run `convert`."
        ) from None


def url_download(url: str) -> Path:
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
