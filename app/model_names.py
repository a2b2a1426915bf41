"""The names a client may give the loaded model (OpenAI's ``model`` field, ``GET /v1/models``).

The one place that asks the library for a model's name and aliases: with the model registry
(``embedder.spec`` or ``handspring_models.find_model``) its name and aliases, else the model's
name alone; the feature's own name (``clip_vit_b_32_text``) is accepted too.
"""

from __future__ import annotations

import handspring_models


def _spec(embedder):
    spec = getattr(embedder, "spec", None)
    if spec is None and hasattr(handspring_models, "find_model"):
        try:
            spec = handspring_models.find_model(embedder.model_name)
        except (KeyError, ValueError, LookupError):
            spec = None
    return spec


def served_names(embedder) -> list[str]:
    """The canonical name first, then its aliases, then the feature's name; no repeats."""
    spec = _spec(embedder)
    names = [spec.name, *spec.aliases] if spec is not None else [embedder.model_name]
    names.append(embedder.feature)
    return list(dict.fromkeys(names))
