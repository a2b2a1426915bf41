"""Parity of the CLIP family's library-published models with their reference libraries.

Each model is built at full size with random weights by the reference library itself
(open_clip or sentence-transformers), in the format it publishes (tests/clip_family_checkpoints.py),
converted by ``python -m handspring_models.weights convert``, loaded by
``handspring_models.load(NAME, weights_dir=DIR, precision="fp32")``, and compared with the
reference's own outputs on the same inputs: cosine >= 0.99999 and equal norms (1e-5, relative)
on the raw projections, token ids equal, and the output convention (normalized or not) that
Weaviate's container has for the model.

The reference's outputs are computed once, when the checkpoint is built, and the reference
model is dropped: only one full-size model of each side is in memory at a time.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import handspring_models
from tests.clip_family_checkpoints import (TEXTS, build_open_clip, build_open_clip_xlm_roberta, build_st_clip,
                                           build_st_multilingual_text)
from tests.conftest import sample_photos

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the reference libraries read local folders only

PHOTOS = ["astronaut_rgb", "coffee_640x427", "chelsea_rgba", "camera_L"]  # 640x427: the crop-rounding case
COSINE = 0.99999
NORM_RTOL = 1e-5


def convert(src: Path, model: str, out: Path, *extra: str) -> Path:
    from handspring_models.weights.__main__ import main

    assert main(["convert", str(src), "--model", model, "--out", str(out), *extra]) == 0
    return out


def assert_parity(ours: np.ndarray, reference: np.ndarray) -> None:
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape
    cosine = (ours * reference).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(reference, axis=-1))
    assert cosine.min() >= COSINE, f"cosines {np.round(cosine, 7)}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), np.linalg.norm(reference, axis=-1), rtol=NORM_RTOL)


def assert_batch_invariant(model) -> None:
    """Short texts embedded alone, then after longer ones in one batch (so padded): the same
    vectors, to float rounding (the matrix shapes differ, so the summation order may)."""
    short = ["a dog", "犬", ""]
    longer = [" ".join(["a much longer text about a dog in a park"] * 5), TEXTS[-1]]
    alone = np.concatenate([model.embed_texts([t]) for t in short])
    together = model.embed_texts([*longer, *short])[len(longer):]
    change = np.linalg.norm(together - alone, axis=-1) / np.linalg.norm(alone, axis=-1)
    assert change.max() < 1e-5, change


def openai_crop_pixels(image) -> torch.Tensor:
    """open_clip's (torchvision's) preprocessing: transformers' image processor resizes and
    normalizes as torchvision does on PIL images; the centre crop is taken at torchvision's
    rounded offsets (transformers' crop floors them)."""
    from transformers import CLIPImageProcessor

    full = CLIPImageProcessor()(images=image, do_center_crop=False, return_tensors="pt")["pixel_values"][0]
    _, h, w = full.shape
    top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    return full[:, top: top + 224, left: left + 224]


@pytest.fixture(scope="module")
def open_clip():
    from tests.reference_libraries import import_open_clip

    return import_open_clip()


@pytest.fixture(scope="module")
def photos():
    all_photos = sample_photos()
    return [all_photos[name] for name in PHOTOS]


# ---------------------------------------------------------------- open_clip: CLIP architecture

def _open_clip_reference(open_clip, model, folder: Path, photos) -> dict:
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    with torch.no_grad():
        ids = tokenizer(TEXTS)
        return {
            "ids": ids,
            "text": model.encode_text(ids).numpy(),
            "image": model.encode_image(torch.stack([openai_crop_pixels(p) for p in photos])).numpy(),
        }


@pytest.fixture(scope="module", params=[("openclip_vit_b_16_laion2b", "ViT-B-16", "laion2b_s34b_b88k"),
                                        ("openclip_vit_b_32_quickgelu_laion400m", "ViT-B-32-quickgelu",
                                         "laion400m_e32")],
                ids=["b16_gelu", "b32_quickgelu"])
def open_clip_case(request, open_clip, tmp_path_factory, bpe_path, photos):
    """(model name, weights folder, reference outputs) for an open_clip CLIP-architecture model."""
    name, arch, tag = request.param
    folder = tmp_path_factory.mktemp(f"{name}-published")
    model = build_open_clip(open_clip, arch, tag, folder, bpe_path, seed=11)
    reference = _open_clip_reference(open_clip, model, folder, photos)
    del model
    gc.collect()
    return name, convert(folder, name, tmp_path_factory.mktemp(name)), reference


@pytest.mark.slow
class TestOpenClipCLIP:
    @pytest.fixture(scope="class")
    @classmethod
    def ours(cls, open_clip_case):
        name, weights, _ = open_clip_case
        return handspring_models.load(name, weights_dir=weights, precision="fp32", normalize=False)

    def test_token_ids_equal_open_clip(self, ours, open_clip_case):
        """open_clip's tokenizer is OpenAI's; ours stops at the first end-of-text token (a typed
        "<|endoftext|>" ends the text: the reference pools there, and the causal mask hides the rest)."""
        end = ours.tokenizer.eot_id
        for text, row in zip(TEXTS, open_clip_case[2]["ids"].tolist()):
            assert ours.prepare("text", text).tolist() == row[: row.index(end) + 1], text

    def test_texts_match_open_clip(self, ours, open_clip_case):
        assert_parity(ours.embed_texts(TEXTS), open_clip_case[2]["text"])

    def test_images_match_open_clip(self, ours, open_clip_case, photos):
        assert_parity(ours.embed_images(photos), open_clip_case[2]["image"])

    def test_default_output_is_unit_vectors_like_weaviate(self, open_clip_case, photos):
        name, weights, reference = open_clip_case
        model = handspring_models.load(name, weights_dir=weights, precision="fp32", normalize=None)
        vectors = model.embed_images(photos[:1])
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-6)
        unit = reference["image"][:1] / np.linalg.norm(reference["image"][:1], axis=-1, keepdims=True)
        assert_parity(vectors, unit)


# ---------------------------------------------------------------- open_clip: XLM-RoBERTa text tower

XLM_R = "openclip_xlm_roberta_base_vit_b_32_laion5b"


@pytest.fixture(scope="module")
def xlm_roberta_case(open_clip, tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("xlmr-published")
    model = build_open_clip_xlm_roberta(open_clip, folder, tmp_path_factory.mktemp("xlm-roberta-base"), seed=12)
    reference = _open_clip_reference(open_clip, model, folder, photos)
    del model
    gc.collect()
    return convert(folder, XLM_R, tmp_path_factory.mktemp("xlmr")), reference


@pytest.mark.slow
class TestOpenClipXLMRoberta:
    @pytest.fixture(scope="class")
    @classmethod
    def ours(cls, xlm_roberta_case):
        return handspring_models.load(XLM_R, weights_dir=xlm_roberta_case[0], precision="fp32", normalize=False)

    def test_token_ids_equal_open_clip(self, ours, xlm_roberta_case):
        """open_clip's HFTokenizer (transformers' XLM-R tokenizer on the same files, its cleaning,
        77 tokens, pad id 1) and ours (tokenizers on tokenizer.json) agree."""
        for text, row in zip(TEXTS, xlm_roberta_case[1]["ids"]):
            ids = ours.prepare("text", text).tolist()
            assert ids == row[: len(ids)].tolist() and (row[len(ids):] == 1).all(), text

    def test_texts_match_open_clip(self, ours, xlm_roberta_case):
        assert_parity(ours.embed_texts(TEXTS), xlm_roberta_case[1]["text"])

    def test_images_match_open_clip(self, ours, xlm_roberta_case, photos):
        assert_parity(ours.embed_images(photos), xlm_roberta_case[1]["image"])

    def test_batching_changes_no_text_vector(self, ours):
        assert_batch_invariant(ours)


# ---------------------------------------------------------------- sentence-transformers CLIP

ST_CLIP = "st_clip_vit_b_32"


def _st_clip_reference(st_model, folder: Path, photos) -> dict:
    """sentence-transformers' outputs, except for texts over 77 tokens, on which it fails (it does
    not truncate): for those, the same model's text features of the text cut as transformers'
    tokenizer cuts it (``truncation=True``), which is what we embed."""
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(folder / "0_CLIPModel")
    ids = [hf_tokenizer(t, truncation=True, max_length=77)["input_ids"] for t in TEXTS]
    fits = [len(hf_tokenizer(t)["input_ids"]) <= 77 for t in TEXTS]
    text = np.zeros((len(TEXTS), 512), dtype=np.float32)
    text[np.array(fits)] = st_model.encode([t for t, ok in zip(TEXTS, fits) if ok])
    hf_clip = st_model[0].model
    with torch.no_grad():
        for row, ok in enumerate(fits):
            if not ok:
                features = hf_clip.get_text_features(input_ids=torch.tensor([ids[row]]))
                text[row] = getattr(features, "pooler_output", features)[0].numpy()
    st_ids = st_model.tokenize([t for t, ok in zip(TEXTS, fits) if ok])
    return {"ids": ids, "fits": fits, "st_ids": st_ids, "text": text, "image": st_model.encode(photos)}


@pytest.fixture(scope="module")
def st_clip_case(tmp_path_factory, bpe_path, photos):
    folder = tmp_path_factory.mktemp("st-clip-published")
    st_model = build_st_clip(folder, bpe_path, seed=13)
    reference = _st_clip_reference(st_model, folder, photos)
    del st_model
    gc.collect()
    return folder, convert(folder, ST_CLIP, tmp_path_factory.mktemp("st-clip")), reference


@pytest.mark.slow
class TestSentenceTransformersCLIP:
    @pytest.fixture(scope="class")
    @classmethod
    def ours(cls, st_clip_case):
        return handspring_models.load(ST_CLIP, weights_dir=st_clip_case[1], precision="fp32")

    def test_token_ids_equal_transformers_clip_tokenizer(self, ours, st_clip_case):
        """transformers' CLIP tokenizer semantics (no ftfy, no HTML unescaping), cut at 77. A
        typed "<|endoftext|>" ends the text: the reference pools at the first one."""
        reference = st_clip_case[2]
        end = ours.tokenizer.eot_id
        for text, ids in zip(TEXTS, reference["ids"]):
            assert ours.prepare("text", text).tolist() == ids[: ids.index(end) + 1], text
        st_rows = reference["st_ids"]["input_ids"]
        fitting = [ids for ids, ok in zip(reference["ids"], reference["fits"]) if ok]
        for ids, row in zip(fitting, st_rows):  # sentence-transformers' own tokenization agrees
            assert row[: len(ids)].tolist() == ids

    def test_html_and_mojibake_are_not_cleaned(self, ours, st_clip_case):
        """The sentence-transformers pipeline skips OpenAI's cleaning: &amp; stays four characters."""
        index = next(i for i, t in enumerate(TEXTS) if "&amp;" in t)
        assert ours.prepare("text", TEXTS[index]).tolist() == st_clip_case[2]["ids"][index]
        assert len(ours.prepare("text", "&amp;")) > len(ours.prepare("text", "&"))

    def test_raw_projections_by_default_like_weaviate(self, ours, st_clip_case):
        assert not ours.normalize
        assert_parity(ours.embed_texts(TEXTS), st_clip_case[2]["text"])

    def test_images_match_sentence_transformers(self, ours, st_clip_case, photos):
        """Its image processor floors the centre-crop offset: coffee_640x427 is cropped a pixel
        to the left of where OpenAI crops it."""
        assert_parity(ours.embed_images(photos), st_clip_case[2]["image"])


# ---------------------------------------------------------------- sentence-transformers multilingual

ST_MULTILINGUAL = "st_clip_vit_b_32_multilingual_v1"


@pytest.fixture(scope="module")
def st_multilingual_case(tmp_path_factory, st_clip_case):
    folder = tmp_path_factory.mktemp("st-multilingual-published")
    st_model = build_st_multilingual_text(folder, seed=14)
    reference = {"text": st_model.encode(TEXTS), "ids": st_model.tokenize(TEXTS)}
    del st_model
    gc.collect()
    both = convert(folder, ST_MULTILINGUAL, tmp_path_factory.mktemp("st-ml"), "--image-src", str(st_clip_case[0]))
    return folder, both, reference


@pytest.mark.slow
class TestSentenceTransformersMultilingual:
    @pytest.fixture(scope="class")
    @classmethod
    def ours(cls, st_multilingual_case):
        return handspring_models.load(ST_MULTILINGUAL, weights_dir=st_multilingual_case[1], precision="fp32")

    def test_token_ids_equal_sentence_transformers(self, ours, st_multilingual_case):
        """DistilBERT's WordPiece through sentence-transformers, cut at its 128-token limit."""
        reference = st_multilingual_case[2]["ids"]
        for text, row, mask in zip(TEXTS, reference["input_ids"], reference["attention_mask"]):
            assert ours.prepare("text", text).tolist() == row[mask.bool()].tolist(), text
        assert ours.context_length == 128

    def test_raw_projections_match_sentence_transformers(self, ours, st_multilingual_case):
        assert not ours.normalize
        assert_parity(ours.embed_texts(TEXTS), st_multilingual_case[2]["text"])

    def test_images_are_the_clip_image_tower(self, ours, st_clip_case, photos):
        assert_parity(ours.embed_images(photos), st_clip_case[2]["image"])

    def test_batching_changes_no_text_vector(self, ours):
        assert_batch_invariant(ours)

    def test_without_image_src_the_folder_serves_text_only(self, st_multilingual_case, tmp_path):
        text_only = convert(st_multilingual_case[0], ST_MULTILINGUAL, tmp_path / "text-only")
        model = handspring_models.load(f"{ST_MULTILINGUAL}_text", weights_dir=text_only, precision="fp32")
        assert_parity(model.embed_texts(TEXTS[:3]), st_multilingual_case[2]["text"][:3])
        assert not (text_only / "image.safetensors").exists()
        with pytest.raises(handspring_models.WeightsError, match="image"):
            handspring_models.load(ST_MULTILINGUAL, weights_dir=text_only, precision="fp32")
