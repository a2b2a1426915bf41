"""The model registry: names, aliases and features come from its entries, each entry's family
provides what the registry promises, and entries describe the real models' shapes."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

import handspring_models
from handspring_models.registry import MODELS, UnknownModelError, find_feature, find_model


def test_every_model_and_modality_is_a_feature():
    for spec in MODELS:
        assert handspring_models.FEATURES[spec.name] == (spec.name, spec.modalities)
        for modality in spec.modalities:
            assert handspring_models.FEATURES[f"{spec.name}_{modality}"] == (spec.name, (modality,))


def test_aliases_name_the_whole_model():
    spec = find_model("openai/clip-vit-base-patch16")
    assert spec.name == "clip_vit_b_16" and find_model("openai-clip-vit-base-patch16") is spec
    assert find_feature("openai-clip-vit-base-patch16") == (spec, "clip_vit_b_16", ("text", "image"))


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(UnknownModelError, match="clip_vit_b_32"):
        find_model("clip_vit_g_99")
    with pytest.raises(UnknownModelError):
        find_feature("clip_vit_b_32_audio")


def test_no_name_is_shared_between_models():
    names = [n for spec in MODELS for n in (spec.name, *spec.aliases)]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s.name)
def test_each_family_provides_the_registry_interface(spec):
    family = spec.family_module()
    assert issubclass(family.Embedder, handspring_models.Embedder)
    for function in ("convert", "random_weights"):
        parameters = list(inspect.signature(getattr(family, function)).parameters)
        assert parameters[:3] == (["src", "spec", "out"] if function == "convert" else ["spec", "out", "seed"])
    assert set(spec.components) == set(spec.modalities)
    assert spec.license and spec.description and (spec.source.repo_id or spec.source.url)


# Parameter counts of the published checkpoints (both towers, without logit_scale).
CLIP_PARAMETERS = {"clip_vit_b_32": 151_277_312, "clip_vit_b_16": 149_620_736,
                   "clip_vit_l_14": 427_616_512, "clip_vit_l_14_336": 427_944_192}


@pytest.mark.parametrize("name", CLIP_PARAMETERS)
def test_clip_entries_have_the_published_shape(name):
    from handspring_models.clip import CLIP, CLIPConfig

    with torch.device("meta"):
        model = CLIP(CLIPConfig.from_dict(find_model(name).architecture))
    assert sum(p.numel() for p in model.parameters()) == CLIP_PARAMETERS[name]


def test_load_finds_a_model_by_alias_and_takes_its_output_convention(tmp_path):
    from handspring_models.clip.model import CLIPConfig, TextConfig, VisionConfig
    from handspring_models.weights import random_weights

    tiny = CLIPConfig(embed_dim=16, vision=VisionConfig(32, 16, 32, 1, 2), text=TextConfig(77, 49408, 32, 1, 2))
    random_weights("clip_vit_b_32", tmp_path, architecture=tiny)
    embedder = handspring_models.load("openai/clip-vit-base-patch32", tmp_path)
    assert embedder.feature == "clip_vit_b_32" and embedder.normalize is True
    assert torch.allclose(torch.from_numpy(embedder.embed_texts(["a dog"])).norm(dim=-1), torch.ones(1))
    raw = handspring_models.load("clip_vit_b_32_text", tmp_path, normalize=False).embed_texts(["a dog"])
    assert abs(float(torch.from_numpy(raw).norm()) - 1) > 1e-3


def test_the_library_default_folder_is_a_user_cache(monkeypatch, tmp_path):
    from handspring_models.weights import default_weights_dir

    monkeypatch.delenv("HANDSPRING_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HANDSPRING_WEIGHTS_DIR", "/somewhere/the/service/reads")  # not the library's
    assert default_weights_dir("clip_vit_b_32") == tmp_path / "cache" / "handspring" / "clip_vit_b_32"
    monkeypatch.setenv("HANDSPRING_HOME", str(tmp_path / "home"))
    assert default_weights_dir("clip_vit_b_32") == tmp_path / "home" / "clip_vit_b_32"


def test_no_model_name_is_written_in_library_code_outside_the_registry():
    """Code that branches on a model's name is what the registry replaces (docs may name one)."""
    import ast

    root = Path(handspring_models.__file__).parent
    names = {n for spec in MODELS for n in (spec.name, *spec.aliases)}
    for path in root.rglob("*.py"):
        if path.name == "registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = node.value in names or any(node.value.startswith(f"{n}_") for n in names)
                assert not named, f"{path.relative_to(root)}:{node.lineno} names the model {node.value!r}"
