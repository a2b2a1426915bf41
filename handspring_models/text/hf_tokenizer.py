"""Tokenizers read with Hugging Face's ``tokenizers`` library from a model's own ``tokenizer.json``:
XLM-RoBERTa's SentencePiece (Unigram) vocabulary, DistilBERT's WordPiece, CLIP's BPE as
transformers' ``CLIPTokenizerFast`` has it. CLIP's OpenAI-exact BPE is ours (``clip_bpe``).

The library does the splitting; what the reference pipelines add around it is here: their text
cleaning, and a length limit that cuts a long text (keeping its end token) instead of failing.
"""

from __future__ import annotations

import html
from pathlib import Path

CLEANERS = ("none", "open_clip_whitespace")


def clean_open_clip_whitespace(text: str) -> str:
    """open_clip's ``clean='whitespace'`` (its Hugging Face tokenizers' default): ftfy's fixes,
    HTML entities unescaped twice, whitespace runs collapsed to one space. No lower-casing."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split())


class HFTokenizer:
    """``tokenizer.json`` -> token ids, with the special tokens its post-processor adds
    (``<s> ... </s>``, ``[CLS] ... [SEP]``...), at most ``context_length`` of them."""

    def __init__(self, path: Path, context_length: int, clean: str = "none", end_token: str | None = None):
        from tokenizers import Tokenizer as LibraryTokenizer

        if clean not in CLEANERS:
            raise ValueError(f"unknown text cleaning {clean!r}; known: {', '.join(CLEANERS)}")
        self.clean = clean_open_clip_whitespace if clean == "open_clip_whitespace" else None
        self.context_length = context_length
        self._tokenizer = LibraryTokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        # Cut from the right, the special tokens kept: transformers' truncation=True.
        self._tokenizer.enable_truncation(max_length=context_length)
        # A causal text tower pools at its end token (CLIP's <|endoftext|>): its id, for the embedder.
        self.eot_id = self.token_id(end_token) if end_token is not None else None

    def token_id(self, token: str) -> int:
        """The id of a (special) token; ValueError if the vocabulary lacks it."""
        found = self._tokenizer.token_to_id(token)
        if found is None:
            raise ValueError(f"the tokenizer has no token {token!r}")
        return found

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __call__(self, text: str) -> list[int]:
        if self.clean is not None:
            text = self.clean(text)
        return self._tokenizer.encode(text).ids


def from_spec(spec, folder: Path) -> HFTokenizer:
    """The registry's loader (``handspring_models.text``): ``spec.files[0]`` is the tokenizer.json;
    options ``clean`` (see ``CLEANERS``) and ``end_token``."""
    unknown = set(spec.options) - {"clean", "end_token"}
    if unknown:
        raise ValueError(f"unknown hf_tokenizer options {sorted(unknown)}")
    return HFTokenizer(folder / spec.files[0], spec.context_length, clean=spec.options.get("clean", "none"),
                       end_token=spec.options.get("end_token"))
