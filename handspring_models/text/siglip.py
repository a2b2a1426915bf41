"""SigLIP's and SigLIP 2's tokenizers, read from the model's own files with the library each was
made for, plus what the model's pipeline does around it. Both give exactly ``context_length`` ids
per text (64 for every published checkpoint): cut, end token, then padding, as in training.

- ``siglip_sentencepiece`` (SigLIP): ``spiece.model`` read by ``sentencepiece``, with what transformers'
  ``SiglipTokenizer`` does first: the literal special tokens (``</s>``, ``<unk>``...) are split
  out, then each piece of text is lower-cased, stripped of ASCII punctuation and its whitespace
  collapsed. The end token ``</s>`` (id 1) ends every text and also pads.
- ``gemma`` (SigLIP 2): Gemma's ``tokenizer.json`` read by Hugging Face ``tokenizers``, on the
  lower-cased text (big_vision lower-cases SigLIP 2's texts; the published folders' tokenizer does
  not), then ``<eos>`` and ``<pad>`` (id 0) padding.

The ids equal transformers' tokenizer's with ``padding="max_length", max_length=64,
truncation=True`` (SigLIP 2's on the lower-cased text). A text over the context is cut and keeps
its end token.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

_PUNCTUATION = str.maketrans("", "", string.punctuation)  # ASCII punctuation only, as transformers
_WHITESPACE = re.compile(r"\s+")
_SPIECE_UNDERLINE = "▁"


class TokenizerFilesError(ValueError):
    """A tokenizer file is missing or unreadable."""


def _pad(ids: list[int], end_id: int, pad_id: int, context_length: int, typed_end_ends: bool = False) -> list[int]:
    """Cut to leave room for the end token, end the text, pad to the full context.
    ``typed_end_ends``: a text whose last token is already the end token (typed) gets no second one
    (transformers' SiglipTokenizer; Gemma's adds it regardless)."""
    ids = ids[: context_length - 1]
    if not (typed_end_ends and ids and ids[-1] == end_id):
        ids.append(end_id)
    return ids + [pad_id] * (context_length - len(ids))


class SentencePieceTokenizer:
    """SigLIP's tokenizer: ``spiece.model`` with transformers' ``SiglipTokenizer`` text rewriting."""

    def __init__(self, model_file: Path, context_length: int, config: dict | None = None):
        import sentencepiece

        config = config or {}
        self.context_length = context_length
        self.lowercase = bool(config.get("do_lower_case", True))
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        except (OSError, RuntimeError) as e:
            raise TokenizerFilesError(f"{model_file} is not a SentencePiece model: {e}") from None

        def token(name: str, default: str) -> str:
            value = config.get(name, default)
            return value["content"] if isinstance(value, dict) else value

        self.unk_token = token("unk_token", "<unk>")
        self.eos_id = self._piece_id(token("eos_token", "</s>"), model_file)
        self.pad_id = self._piece_id(token("pad_token", "</s>"), model_file)
        # Literal special tokens typed in a text become their ids, as in transformers.
        specials = {token("eos_token", "</s>"), self.unk_token, token("pad_token", "</s>")}
        specials.update(t["content"] for t in config.get("added_tokens_decoder", {}).values())
        for key in ("additional_special_tokens", "extra_special_tokens"):
            extra = config.get(key) or []
            specials.update(t["content"] if isinstance(t, dict) else t for t in extra)
        self.special_ids = {t: self._piece_id(t, model_file) for t in specials if t}
        self._split = re.compile("(" + "|".join(re.escape(t) for t in sorted(self.special_ids, key=len, reverse=True)) + ")")
        underline = self.sp.piece_to_id(_SPIECE_UNDERLINE)
        self._underline_id = underline if self.sp.id_to_piece(underline) == _SPIECE_UNDERLINE else None
        self._unk_length = len(self.sp.encode(self.unk_token))

    def _piece_id(self, piece: str, model_file: Path) -> int:
        i = self.sp.piece_to_id(piece)
        if self.sp.id_to_piece(i) != piece:
            raise TokenizerFilesError(f"{model_file} has no piece {piece!r}")
        return i

    def canonicalize(self, text: str) -> str:
        """transformers' ``SiglipTokenizer.canonicalize_text``: lower-case, drop ASCII punctuation,
        collapse whitespace."""
        if self.lowercase:
            text = text.lower()
        return _WHITESPACE.sub(" ", text.translate(_PUNCTUATION)).strip()

    def _encode_piece(self, text: str) -> list[int]:
        # Encoded behind the unknown token, which is then dropped: SentencePiece then adds no
        # dummy "▁" to a piece that follows a special token (transformers' non-legacy behaviour).
        pieces = self.sp.encode(self.unk_token + self.canonicalize(text), out_type=str)
        if len(pieces) >= self._unk_length:
            pieces = pieces[self._unk_length:]
        return [self.sp.piece_to_id(p) for p in pieces]

    def encode(self, text: str) -> list[int]:
        """The text's ids, without end token or padding."""
        text = _SPIECE_UNDERLINE + text.replace(_SPIECE_UNDERLINE, " ")
        ids: list[int] = []
        second_is_special = False
        for part in self._split.split(text):
            if part in self.special_ids:
                second_is_special = second_is_special or len(ids) == 1
                ids.append(self.special_ids[part])
            elif part:
                ids.extend(self._encode_piece(part))
        if second_is_special and ids[0] == self._underline_id:
            ids = ids[1:]  # a text that starts with a special token keeps no lone "▁" before it
        return ids

    def __call__(self, text: str) -> list[int]:
        return _pad(self.encode(text), self.eos_id, self.pad_id, self.context_length, typed_end_ends=True)


class GemmaTokenizer:
    """SigLIP 2's tokenizer: Gemma's ``tokenizer.json`` on the lower-cased text, then ``<eos>``."""

    def __init__(self, tokenizer_file: Path, context_length: int, lowercase: bool = True,
                 eos_token: str = "<eos>", pad_token: str = "<pad>"):
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as e:  # tokenizers raises its own Exception subclass on a bad file
            raise TokenizerFilesError(f"{tokenizer_file} is not a tokenizers JSON file: {e}") from None
        # Its post-processor (which may add <bos>), padding and truncation settings are not used:
        # the end token and the padding are ours, as the model was trained.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.context_length = context_length
        self.lowercase = lowercase
        self.eos_id = self._token_id(eos_token, tokenizer_file)
        self.pad_id = self._token_id(pad_token, tokenizer_file)

    def _token_id(self, token: str, tokenizer_file: Path) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise TokenizerFilesError(f"{tokenizer_file} has no token {token!r}")
        return i

    def encode(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def __call__(self, text: str) -> list[int]:
        return _pad(self.encode(text), self.eos_id, self.pad_id, self.context_length)


# ---------------------------------------------------------------- the registry's loaders

SENTENCEPIECE_FILES = ("spiece.model", "tokenizer_config.json")
GEMMA_FILES = ("tokenizer.json",)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TokenizerFilesError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerFilesError(f"{path} is corrupt: {e}") from None


def sentencepiece_from_spec(spec, folder: Path) -> SentencePieceTokenizer:
    """Kind ``siglip_sentencepiece``: ``spiece.model`` and transformers' ``tokenizer_config.json``
    (its special tokens and ``do_lower_case``), which ``spec.options`` may override."""
    model_file, config_file = (folder / name for name in SENTENCEPIECE_FILES)
    if not model_file.is_file():
        raise TokenizerFilesError(f"{model_file} is missing")
    config = {**_read_json(config_file), **dict(spec.options)}
    return SentencePieceTokenizer(model_file, spec.context_length, config)


def gemma_from_spec(spec, folder: Path) -> GemmaTokenizer:
    """Kind ``gemma``: ``tokenizer.json``; ``spec.options``: ``lowercase`` (SigLIP 2: true)."""
    tokenizer_file = folder / GEMMA_FILES[0]
    if not tokenizer_file.is_file():
        raise TokenizerFilesError(f"{tokenizer_file} is missing")
    return GemmaTokenizer(tokenizer_file, spec.context_length, **dict(spec.options))


def write_default_sentencepiece_config(path: Path) -> Path:
    """transformers' SiglipTokenizer defaults as a tokenizer_config.json, for a folder that has
    only ``spiece.model``."""
    path.write_text(json.dumps({"tokenizer_class": "SiglipTokenizer", "do_lower_case": True, "eos_token": "</s>",
                                "pad_token": "</s>", "unk_token": "<unk>", "model_max_length": 64}, indent=2) + "\n")
    return path


# ---------------------------------------------------------------- stand-ins for random weights

_STAND_IN_TEXT = [
    "a photo of a cat", "a photo of a dog", "a picture of a red car on the street",
    "two people walking on the beach at sunset", "a bowl of fruit on a wooden table",
    "the quick brown fox jumps over the lazy dog", "ein hund läuft über die wiese",
    "un chat dort sur le canapé", "東京の夜景", "кошка на ковре", "numbers 0 1 2 3 4 5 6 7 8 9",
]


def write_stand_in(kind: str, folder: Path) -> list[Path]:
    """A small vocabulary with the real special-token layout, trained here (no real vocabulary
    offline): for random-weight demo models only. Returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "siglip_sentencepiece":
        import io

        import sentencepiece

        buffer = io.BytesIO()
        # T5's layout, which SigLIP's vocabularies share: <pad> 0, </s> 1, <unk> 2, no <s>.
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(_STAND_IN_TEXT * 8), model_writer=buffer, vocab_size=120,
            hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
        model_file, config_file = (folder / name for name in SENTENCEPIECE_FILES)
        model_file.write_bytes(buffer.getvalue())
        return [model_file, write_default_sentencepiece_config(config_file)]
    if kind == "gemma":
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        # Gemma's layout: <pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4, byte fallback tokens.
        specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)]
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tokenizer.normalizer = normalizers.Replace(" ", _SPIECE_UNDERLINE)
        tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
        tokenizer.train_from_iterator(_STAND_IN_TEXT, trainers.BpeTrainer(
            vocab_size=len(specials) + 200, special_tokens=specials, show_progress=False))
        path = folder / GEMMA_FILES[0]
        tokenizer.save(str(path))
        return [path]
    raise ValueError(f"no stand-in vocabulary for tokenizer kind {kind!r}")
