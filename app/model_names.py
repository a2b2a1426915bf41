"""The names a client may give the loaded model (OpenAI's ``model`` field, ``GET /v1/models``):
its registry name, then its aliases, then the loaded feature's own name (``clip_vit_b_32_text``)."""

from __future__ import annotations


def served_names(embedder) -> list[str]:
    """The canonical name first, then its aliases, then the feature's name; no repeats."""
    spec = getattr(embedder, "spec", None)
    names = [spec.name, *spec.aliases] if spec is not None else [embedder.model_name]
    names.append(embedder.feature)
    return list(dict.fromkeys(names))
