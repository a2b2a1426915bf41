"""Stand-in tokenizers for random-weight demo models: the real special-token layout of each text
tower's kind, and a tiny vocabulary (single characters), so ``random`` needs no download."""

from __future__ import annotations

import string
from pathlib import Path

from .text_towers import TextTowerConfig

_CHARS = string.ascii_letters + string.digits + string.punctuation


def stand_in_tokenizer(path: Path, text: TextTowerConfig) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if text.kind == "xlm_roberta":
        # fairseq's layout: <s> <pad> </s> <unk>, then SentencePiece pieces ("▁" marks a word start).
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        pieces = [(t, 0.0) for t in specials] + [(p, -1.0) for c in _CHARS for p in (c, "\u2581" + c)]
        tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3))
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    else:
        # BERT's layout: [PAD]=0, [unused*], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103.
        vocab = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        vocab += list(_CHARS) + [f"##{c}" for c in _CHARS]
        tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    tokenizer.save(str(path))
    return path
