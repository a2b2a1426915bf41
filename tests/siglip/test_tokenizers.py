"""Our SigLIP tokenizers give transformers' ids (``padding="max_length", max_length=64``) on
tokenizer files transformers wrote; SigLIP 2's on the lower-cased text."""

import warnings

import pytest

from handspring_models.registry import TokenizerSpec
from handspring_models.text import siglip as tokenizers
from tests.siglip.conftest import SIGLIP2_MODEL, SIGLIP_MODEL, TEXTS, load_tokenizer


def reference(folder):
    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoTokenizer.from_pretrained(folder)


def reference_ids(tokenizer, text: str) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "already has </s>" for a text ending in a typed one
        return tokenizer(text, padding="max_length", max_length=64, truncation=True)["input_ids"]


@pytest.fixture(scope="module")
def siglip_pair(siglip_tiny_hf):
    folder = siglip_tiny_hf[1]
    return load_tokenizer(SIGLIP_MODEL, folder), reference(folder)


@pytest.fixture(scope="module")
def siglip2_pair(siglip2_tiny_hf):
    folder = siglip2_tiny_hf[1]
    return load_tokenizer(SIGLIP2_MODEL, folder), reference(folder)


def test_reference_tokenizers_are_the_published_classes(siglip_pair, siglip2_pair):
    assert type(siglip_pair[1]).__name__ == "SiglipTokenizer"
    assert type(siglip2_pair[1]).__name__ == "GemmaTokenizer"


@pytest.mark.parametrize("text", TEXTS)
def test_siglip_ids_equal_transformers(siglip_pair, text):
    ours, ref = siglip_pair
    assert ours(text) == reference_ids(ref, text)


@pytest.mark.parametrize("text", TEXTS)
def test_siglip2_ids_equal_transformers_on_lower_cased_text(siglip2_pair, text):
    ours, ref = siglip2_pair
    assert ours(text) == reference_ids(ref, text.lower())


def test_siglip_rewrites_case_punctuation_and_whitespace(siglip_pair):
    ours, _ = siglip_pair
    assert ours("A  Photo,\tof a DOG!!!") == ours("a photo of a dog")


def test_siglip2_lower_cases(siglip2_pair):
    ours, _ = siglip2_pair
    assert ours("A Photo Of A DOG") == ours("a photo of a dog")
    assert ours("a dog!") != ours("a dog")  # punctuation is Gemma's business: kept


@pytest.mark.parametrize("kind, end, pad", [("siglip", 1, 1), ("siglip2", 1, 0)])
def test_short_text_is_ended_and_padded_to_64(siglip_pair, siglip2_pair, kind, end, pad):
    ours = (siglip_pair if kind == "siglip" else siglip2_pair)[0]
    ids = ours("a dog")
    n = len(ours.encode("a dog"))
    assert len(ids) == 64
    assert ids[n] == end and ids[n + 1:] == [pad] * (63 - n)


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_long_text_is_cut_and_keeps_its_end_token(siglip_pair, siglip2_pair, kind):
    ours = (siglip_pair if kind == "siglip" else siglip2_pair)[0]
    text = " ".join(f"word{i}" for i in range(200))
    assert len(ours.encode(text)) > 64
    ids = ours(text)
    assert len(ids) == 64 and ids[-1] == ours.eos_id
    assert ids[:63] == ours.encode(text)[:63]


SPM = TokenizerSpec("siglip_sentencepiece", tokenizers.SENTENCEPIECE_FILES, 64)
GEMMA = TokenizerSpec("gemma", tokenizers.GEMMA_FILES, 64)


def test_missing_tokenizer_file_is_named(tmp_path):
    with pytest.raises(tokenizers.TokenizerFilesError, match="spiece.model"):
        tokenizers.sentencepiece_from_spec(SPM, tmp_path)
    with pytest.raises(tokenizers.TokenizerFilesError, match="tokenizer.json"):
        tokenizers.gemma_from_spec(GEMMA, tmp_path)


def test_corrupt_tokenizer_file_is_named(tmp_path):
    (tmp_path / "spiece.model").write_bytes(b"not a model")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{")
    with pytest.raises(tokenizers.TokenizerFilesError, match="spiece.model"):
        tokenizers.sentencepiece_from_spec(SPM, tmp_path)
    with pytest.raises(tokenizers.TokenizerFilesError, match="tokenizer.json"):
        tokenizers.gemma_from_spec(GEMMA, tmp_path)


@pytest.mark.parametrize("spec", [SPM, GEMMA], ids=["siglip_sentencepiece", "gemma"])
def test_stand_in_vocabulary_has_the_real_special_layout(tmp_path, spec):
    tokenizers.write_stand_in(spec.kind, tmp_path)
    from handspring_models.text import load_tokenizer as load

    tok = load(spec, tmp_path)
    assert (tok.eos_id, tok.pad_id) == ((1, 1) if spec is SPM else (1, 0))
    assert len(tok("a photo of a cat")) == 64
