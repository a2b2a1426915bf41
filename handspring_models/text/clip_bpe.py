"""CLIP's byte-level BPE tokenizer (the one OpenAI trained CLIP with).

Semantics follow the original: ftfy + double HTML unescape, whitespace collapsed, lower-cased,
split with CLIP's regex, bytes mapped to printable unicode, BPE-merged by rank. Every text
becomes ``[<|startoftext|>] + tokens + [<|endoftext|>]``; a text longer than the context is
cut and its last kept position becomes ``<|endoftext|>`` (never an error).

The vocabulary is rebuilt from the merges file alone: 256 byte symbols, the same with the
end-of-word marker, one symbol per merge, then the two special tokens.
"""

from __future__ import annotations

import functools
import gzip
import html
from pathlib import Path

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
END_OF_WORD = "</w>"

_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# How a text may spell the two special tokens to get them: OpenAI's tokenizer takes its own names;
# open_clip's (the same BPE otherwise) takes "<start_of_text>" and "<end_of_text>" instead, and
# reads a typed "<|endoftext|>" as plain text.
OPENAI_TYPED_SPECIALS = (SOT, EOT)


@functools.lru_cache(maxsize=4)
def _patterns(typed_specials: tuple[str, str] = OPENAI_TYPED_SPECIALS):
    """(split, whitespace) patterns. ``regex`` and ``ftfy`` take ~0.1 s to import: they load on the
    first tokenizer built (in its own thread, beside the weights), not when the package is imported."""
    import regex

    specials = "|".join(regex.escape(t) for t in typed_specials)
    return regex.compile(f"{specials}|{_SPLIT_PATTERN}", regex.IGNORECASE), regex.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character map (printable bytes map to themselves)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clean(text: str) -> str:
    """The original cleaning: fix mojibake, unescape HTML twice, collapse whitespace, lower-case."""
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _patterns()[1].sub(" ", text).strip().lower()


def read_merges(path: str | Path, count: int = 49152 - 256 - 2) -> list[tuple[str, str]]:
    """Read a BPE merges file: OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` or Hugging Face's
    ``merges.txt``. Both start with one header line holding ``#version``; CLIP uses the next ``count``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and "#version" in lines[0]:  # OpenAI's gz starts "bpe_simple_vocab_16e6.txt#version: 0.2"
        lines = lines[1:]
    merges = [tuple(line.split()) for line in lines[:count] if line.strip()]
    if len(merges) != count or any(len(m) != 2 for m in merges):
        raise ValueError(f"{path}: expected {count} BPE merges, found {len(merges)} usable lines")
    return merges  # type: ignore[return-value]


class Tokenizer:
    def __init__(self, merges: list[tuple[str, str]], context_length: int = 77,
                 typed_specials: tuple[str, str] = OPENAI_TYPED_SPECIALS):
        self.context_length = context_length
        self.byte_encoder = bytes_to_unicode()
        symbols = list(self.byte_encoder.values())
        symbols += [s + END_OF_WORD for s in symbols]
        symbols += ["".join(m) for m in merges]
        symbols += [SOT, EOT]
        self.encoder = {s: i for i, s in enumerate(symbols)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.sot_id = self.encoder[SOT]
        self.eot_id = self.encoder[EOT]
        self.vocab_size = len(self.encoder)
        self._split = _patterns(tuple(typed_specials))[0]
        import ftfy  # noqa: F401 - loaded here, in the building thread, not on the first text

        # Special tokens typed into a text are kept whole, as the original does.
        typed_sot, typed_eot = typed_specials
        self._cache: dict[str, tuple[str, ...]] = {typed_sot: (SOT,), typed_eot: (EOT,)}

    @classmethod
    def from_file(cls, path: str | Path, context_length: int = 77,
                  typed_specials: tuple[str, str] = OPENAI_TYPED_SPECIALS) -> "Tokenizer":
        return cls(read_merges(path), context_length, typed_specials)

    def _bpe(self, token: str) -> tuple[str, ...]:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = list(token[:-1]) + [token[-1] + END_OF_WORD]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        result = tuple(word)
        if len(self._cache) < 100_000:  # bounded: the service tokenizes arbitrary client text
            self._cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of a text, without start/end tokens and without truncation."""
        ids: list[int] = []
        for piece in self._split.findall(clean(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self._bpe(mapped))
        return ids

    def __call__(self, text: str) -> list[int]:
        """``[SOT] + ids + [EOT]``, cut to the context length keeping EOT last. Not padded."""
        ids = [self.sot_id, *self.encode(text), self.eot_id]
        if len(ids) > self.context_length:
            ids = ids[: self.context_length]
            ids[-1] = self.eot_id
        return ids

    @functools.cached_property
    def decoder(self) -> dict[int, str]:
        # Built on first use: only ``decode`` needs it, and the service never decodes (~5 MB).
        return {i: s for s, i in self.encoder.items()}

    def decode(self, ids: list[int]) -> str:
        byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        text = "".join(self.decoder[i] for i in ids)
        raw = bytearray(byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")


def from_spec(spec, folder: Path) -> Tokenizer:
    """The registry's loader (``handspring_models.text``): ``spec.files[0]`` holds the merges;
    option ``typed_specials``: how a text spells the special tokens (OpenAI's names by default)."""
    typed = tuple(spec.options.get("typed_specials", OPENAI_TYPED_SPECIALS))
    return Tokenizer.from_file(folder / spec.files[0], spec.context_length, typed)
