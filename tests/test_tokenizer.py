"""Our tokenizer gives the same ids as OpenAI's own SimpleTokenizer."""

import pytest

from handspring_models.text.clip_bpe import Tokenizer

TEXTS = [
    "a photo of a dog",
    "A Photo Of A DOG!!!",
    "",
    "   ",
    "the cat's toy isn't here, we'll see; they'd've",
    "Zürich café — naïve façade, smörgåsbord",
    "東京タワーの夜景",
    "사진 속의 고양이",
    "emoji 🐶🐱🚀 and 👩‍👩‍👧 family",
    "fish &amp; chips &lt;3 &amp;amp; &#39;quoted&#39;",
    "mojibake: CafÃ© dÃ©jÃ  vu â€œquotedâ€\x9d",
    "tabs\tand\nnewlines\r\n  collapse",
    "numbers 12345 and 3.14159 and 1e-5",
    "<|startoftext|> special tokens typed <|endoftext|> inside",
    "URL https://example.com/a?b=c&d=e#f",
    "x" * 300,
    " ".join(["word"] * 120),
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


@pytest.fixture(scope="module")
def tokenizer(bpe_path):
    return Tokenizer.from_file(bpe_path)


def openai_ids(ref, text, context=77):
    ids = [ref.encoder["<|startoftext|>"], *ref.encode(text), ref.encoder["<|endoftext|>"]]
    if len(ids) > context:  # clip.tokenize(..., truncate=True)
        ids = ids[:context]
        ids[-1] = ref.encoder["<|endoftext|>"]
    return ids


@pytest.mark.parametrize("text", TEXTS)
def test_ids_equal_openai(tokenizer, openai_tokenizer, text):
    assert tokenizer(text) == openai_ids(openai_tokenizer, text)


def test_vocabulary_equals_openai(tokenizer, openai_tokenizer):
    assert tokenizer.encoder == openai_tokenizer.encoder
    assert tokenizer.vocab_size == 49408


def test_hf_merges_file_gives_same_vocabulary(tokenizer, tiny_hf):
    # merges.txt as Hugging Face publishes it (written by the fixture from the same BPE)
    assert Tokenizer.from_file(tiny_hf[1] / "merges.txt").encoder == tokenizer.encoder


def test_long_text_is_cut_keeping_end_of_text(tokenizer):
    ids = tokenizer(" ".join(["word"] * 200))
    assert len(ids) == 77
    assert ids[0] == tokenizer.sot_id and ids[-1] == tokenizer.eot_id


def test_empty_text_is_start_and_end(tokenizer):
    assert tokenizer("") == [tokenizer.sot_id, tokenizer.eot_id]


def test_decode_round_trips_clean_text(tokenizer):
    assert tokenizer.decode(tokenizer.encode("a photo of a dog")).strip() == "a photo of a dog"


def test_bad_merges_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "merges.txt"
    bad.write_text("#version: 0.2\na b\n")
    with pytest.raises(ValueError, match="BPE merges"):
        Tokenizer.from_file(bad)
