"""Stand-in ``tokenizer.json`` files for random-weight demo models: a kind's real special-token
layout and a tiny vocabulary (single characters), so ``random`` needs no download. Their ids mean
nothing, like the weights beside them."""

from __future__ import annotations

import string
from pathlib import Path

KINDS = ("xlm_roberta", "distilbert", "clip")
_CHARS = string.ascii_letters + string.digits + string.punctuation


def stand_in_tokenizer(path: Path, kind: str) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if kind == "xlm_roberta":
        # fairseq's layout: <s> <pad> </s> <unk>, then SentencePiece pieces ("▁" marks a word start).
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        pieces = [(t, 0.0) for t in specials] + [(p, -1.0) for c in _CHARS for p in (c, "\u2581" + c)]
        tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3))
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        start, end = "<s>", "</s>"
    elif kind == "distilbert":
        # BERT's layout: [PAD]=0, [unused1-99], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103.
        vocab = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        vocab += list(_CHARS) + [f"##{c}" for c in _CHARS]
        tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        start, end = "[CLS]", "[SEP]"
    elif kind == "clip":
        # CLIP's byte-level symbols, then <|startoftext|> and <|endoftext|>.
        symbols = list(pre_tokenizers.ByteLevel.alphabet())
        vocab = {s: i for i, s in enumerate(sorted(symbols))}
        vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
        tokenizer = Tokenizer(models.BPE(vocab, []))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        start, end = "<|startoftext|>", "<|endoftext|>"
    else:
        raise ValueError(f"no stand-in tokenizer for {kind!r}; known: {', '.join(KINDS)}")
    tokenizer.add_special_tokens([start, end])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}", special_tokens=[(t, tokenizer.token_to_id(t)) for t in (start, end)])
    tokenizer.save(str(path))
    return path
