"""The CLIP family's library-published models, quickly: small random models of each entry's
architecture, the format readers' refusals, the tokenizers' cleaning and limits, and the
registry's promises for these entries. Full-size parity with the reference libraries is in
tests/test_clip_family_parity.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import handspring_models
from handspring_models.clip.model import CLIPConfig
from handspring_models.formats import open_clip as oc
from handspring_models.formats import sentence_transformers as st
from handspring_models.multilingual_clip.model import MultilingualCLIPConfig
from handspring_models.registry import find_model
from handspring_models.text.hf_tokenizer import HFTokenizer, clean_open_clip_whitespace
from handspring_models.text.stand_in import stand_in_tokenizer
from handspring_models.weights.build import random_weights

NEW_MODELS = ["openclip_vit_b_16_laion2b", "openclip_vit_b_32_quickgelu_laion400m",
              "openclip_xlm_roberta_base_vit_b_32_laion5b", "st_clip_vit_b_32", "st_clip_vit_b_32_multilingual_v1"]
WEAVIATE_TAGS = {
    "ViT-B-16-laion2b_s34b_b88k": "openclip_vit_b_16_laion2b",
    "ViT-B-32-quickgelu-laion400m_e32": "openclip_vit_b_32_quickgelu_laion400m",
    "xlm-roberta-base-ViT-B-32-laion5b_s13b_b90k": "openclip_xlm_roberta_base_vit_b_32_laion5b",
    "sentence-transformers-clip-ViT-B-32": "st_clip_vit_b_32",
    "sentence-transformers-clip-ViT-B-32-multilingual-v1": "st_clip_vit_b_32_multilingual_v1",
}


def small_architecture(name: str):
    """The entry's architecture, shrunk (2 layers, 64 wide): same code paths, milliseconds."""
    spec = find_model(name)
    if spec.family == "clip":
        c = CLIPConfig.from_dict(spec.architecture)
        return dataclasses.replace(c, embed_dim=32, vision=dataclasses.replace(c.vision, width=64, layers=2, heads=2),
                                   text=dataclasses.replace(c.text, width=64, layers=2, heads=2))
    c = MultilingualCLIPConfig.from_dict(spec.architecture)
    text = dataclasses.replace(c.text, vocab_size=1000, width=64, layers=2, heads=2, intermediate=128, embed_dim=32,
                               projection_hidden=48 if c.text.projection == "mlp" else None)
    return dataclasses.replace(c, embed_dim=32, vision=dataclasses.replace(c.vision, width=64, layers=2, heads=2),
                               text=text)


@pytest.fixture(scope="module", params=NEW_MODELS)
def small_model(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    random_weights(request.param, out, seed=0, architecture=small_architecture(request.param))
    return request.param, out


# ---------------------------------------------------------------- the registry's entries

@pytest.mark.parametrize("tag", list(WEAVIATE_TAGS))
def test_weaviate_tag_is_an_alias(tag):
    assert find_model(tag).name == WEAVIATE_TAGS[tag]


@pytest.mark.parametrize("name", NEW_MODELS)
def test_hub_repo_id_is_an_alias(name):
    assert find_model(find_model(name).source.repo_id).name == name


@pytest.mark.parametrize("name", NEW_MODELS)
def test_output_convention_is_weaviates(name):
    """Weaviate's open_clip path L2-normalizes; its sentence-transformers path returns raw projections."""
    spec = find_model(name)
    assert spec.normalize == (spec.source.format == "open_clip")


def test_multilingual_image_tower_comes_from_the_clip_repository():
    spec = find_model("st_clip_vit_b_32_multilingual_v1")
    assert spec.source.image_repo_id == find_model("st_clip_vit_b_32").source.repo_id


# ---------------------------------------------------------------- small random models

def test_small_model_embeds_texts_and_images(small_model, photos):
    name, folder = small_model
    model = handspring_models.load(name, weights_dir=folder, precision="fp32")
    texts = model.embed_texts(["a dog", "", "犬が走る 🐶", " ".join(["long"] * 300)])
    images = model.embed_images([photos["astronaut_rgb"], photos["camera_L"]])
    assert texts.shape == (4, 32) and images.shape == (2, 32)
    assert np.isfinite(texts).all() and np.isfinite(images).all()
    norms = np.linalg.norm(np.concatenate([texts, images]), axis=-1)
    if find_model(name).normalize:
        np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    else:
        assert not np.allclose(norms, 1.0, atol=1e-3)


def test_normalize_argument_overrides_the_convention(small_model):
    name, folder = small_model
    flipped = not find_model(name).normalize
    model = handspring_models.load(name, weights_dir=folder, precision="fp32", normalize=flipped)
    norms = np.linalg.norm(model.embed_texts(["a dog", "a cat"]), axis=-1)
    assert np.allclose(norms, 1.0, atol=1e-6) == flipped


def test_text_only_feature_loads_no_image_tower(small_model):
    name, folder = small_model
    model = handspring_models.load(f"{name}_text", weights_dir=folder, precision="fp32")
    assert model.modalities == ("text",)
    tower = getattr(model.model, "visual", None)
    assert tower is None


def test_over_long_text_is_cut_not_refused(small_model):
    name, folder = small_model
    model = handspring_models.load(f"{name}_text", weights_dir=folder, precision="fp32")
    ids = model.prepare("text", " ".join(["word"] * 1000))
    assert len(ids) == model.context_length


@pytest.mark.parametrize("name", ["openclip_xlm_roberta_base_vit_b_32_laion5b", "st_clip_vit_b_32_multilingual_v1"])
def test_bidirectional_text_vectors_do_not_depend_on_the_batch(name, tmp_path):
    """Padding is masked out of attention and pooling: a text alone and after longer ones agree."""
    random_weights(name, tmp_path, seed=1, architecture=small_architecture(name))
    model = handspring_models.load(f"{name}_text", weights_dir=tmp_path, precision="fp32", normalize=False)
    short = ["a dog", "犬", ""]
    alone = np.concatenate([model.embed_texts([t]) for t in short])
    together = model.embed_texts([" ".join(["a much longer text"] * 20), *short])[1:]
    change = np.linalg.norm(together - alone, axis=-1) / np.linalg.norm(alone, axis=-1)
    assert change.max() < 1e-5


# ---------------------------------------------------------------- tokenizers

@pytest.mark.parametrize("text", ["Tom &amp;amp; Jerry", "  a\u00a0\u2003b\n\tc  ", "cafÃ© naÃ¯ve", "&lt;b&gt;", ""])
def test_open_clip_cleaning_equals_open_clips(text):
    from tests.reference_libraries import import_open_clip

    reference = import_open_clip().tokenizer.get_clean_fn("whitespace")
    assert clean_open_clip_whitespace(text) == reference(text)


def test_truncation_keeps_the_end_token(tmp_path):
    tokenizer = HFTokenizer(stand_in_tokenizer(tmp_path / "tokenizer.json", "xlm_roberta"), 77)
    ids = tokenizer("x " * 500)
    assert len(ids) == 77 and ids[0] == 0 and ids[-1] == 2


def test_end_token_id_is_read_from_the_vocabulary(tmp_path):
    path = stand_in_tokenizer(tmp_path / "tokenizer.json", "clip")
    tokenizer = HFTokenizer(path, 77, end_token="<|endoftext|>")
    assert tokenizer("a dog")[-1] == tokenizer.eot_id
    with pytest.raises(ValueError, match="no token"):
        HFTokenizer(path, 77, end_token="</s>")


# ---------------------------------------------------------------- the format readers refuse what they cannot run

@pytest.mark.parametrize("section,key,value", [
    ("vision_cfg", "ls_init_value", 1e-5), ("vision_cfg", "attentional_pool", True),
    ("vision_cfg", "timm_model_name", "vit_base_patch32_224"), ("text_cfg", "pool_type", "eos"),
    ("text_cfg", "no_causal_mask", True), ("text_cfg", "proj_bias", True),
])
def test_open_clip_options_we_do_not_implement_are_refused(section, key, value):
    model_cfg = {"embed_dim": 512, "vision_cfg": {"width": 768}, "text_cfg": {"width": 512}}
    model_cfg[section][key] = value
    with pytest.raises(oc.OpenClipFormatError, match=key):
        oc.check_model_cfg(model_cfg)


def test_open_clip_hf_text_tower_with_cls_pooling_is_refused():
    cfg = {"embed_dim": 512, "text_cfg": {"hf_model_name": "xlm-roberta-base", "hf_pooler_type": "cls_pooler"}}
    with pytest.raises(oc.OpenClipFormatError, match="hf_pooler_type"):
        oc.check_model_cfg(cfg)


def _st_text_folder(folder: Path, pooling: dict, dense: dict) -> Path:
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "2_Dense").mkdir()
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (folder / "2_Dense" / "config.json").write_text(json.dumps(dense))
    return folder


IDENTITY = "torch.nn.modules.linear.Identity"
MEAN_FLAGS = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}


@pytest.mark.parametrize("pooling,dense,complaint", [
    ({**MEAN_FLAGS, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True},
     {"bias": False, "activation_function": IDENTITY}, "pooling"),
    ({"pooling_mode": "max"}, {"bias": False, "activation_function": IDENTITY}, "pooling"),
    (MEAN_FLAGS, {"bias": True, "activation_function": IDENTITY}, "Dense"),
    (MEAN_FLAGS, {"bias": False, "activation_function": "torch.nn.modules.activation.Tanh"}, "Dense"),
])
def test_sentence_transformers_pipelines_we_do_not_implement_are_refused(tmp_path, pooling, dense, complaint):
    folder = _st_text_folder(tmp_path, pooling, dense)
    with pytest.raises(st.SentenceTransformersFormatError, match=complaint):
        st.text_pipeline(folder)


def test_sentence_transformers_extra_module_is_refused(tmp_path):
    folder = _st_text_folder(tmp_path, MEAN_FLAGS, {"bias": False, "activation_function": IDENTITY})
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(st.SentenceTransformersFormatError, match="Normalize"):
        st.text_pipeline(folder)


def test_convert_refuses_an_image_folder_for_a_one_folder_model(tmp_path):
    from handspring_models.weights.__main__ import main

    assert main(["convert", str(tmp_path), "--model", "openclip_vit_b_16_laion2b", "--out", str(tmp_path / "out"),
                 "--image-src", str(tmp_path)]) == 1


def test_open_clip_models_tokenize_as_open_clip_does(bpe_path, tmp_path):
    """open_clip's tokenizer is OpenAI's BPE, except how a text spells the special tokens:
    "<end_of_text>" is one, a typed "<|endoftext|>" is plain text (OpenAI's is the reverse)."""
    import shutil

    from handspring_models.text import load_tokenizer
    from tests.clip_family_checkpoints import TEXTS
    from tests.reference_libraries import import_open_clip

    shutil.copyfile(bpe_path, tmp_path / "bpe.txt.gz")
    spec = dataclasses.replace(find_model("openclip_vit_b_16_laion2b").tokenizer, files=("bpe.txt.gz",))
    ours = load_tokenizer(spec, tmp_path)
    reference = import_open_clip().tokenizer.SimpleTokenizer()
    for text in [*TEXTS, "a <end_of_text> b <START_OF_TEXT>", "a <|endoftext|> b"]:
        row = reference([text])[0].tolist()
        ids = ours(text)
        assert ids == row[: len(ids)] and not any(row[len(ids):]), text
