"""SigLIP and SigLIP 2 checkpoints built here by transformers itself (random weights scaled so every
layer matters, no download), in the published folder layout: ``model.safetensors`` and
``config.json`` from ``SiglipModel.save_pretrained``, the tokenizer's files from transformers'
own ``SiglipTokenizer`` / ``GemmaTokenizer`` on vocabularies trained here with the real
special-token layout, ``preprocessor_config.json`` from ``SiglipImageProcessor``.

Tiny configurations for the fast tests; so400m at 384 px (SigLIP) and base at 224 px (SigLIP 2),
at full size, for the slow ones. Every checkpoint is built once per session.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pytest
import torch

from tests.conftest import scale_weights
from tests.test_tokenizer import TEXTS as CLIP_TEXTS

# Texts the tokenizers and towers are checked on: CLIP's set (scripts, emoji, mixed case, empty,
# over-long, typed special tokens) plus what SigLIP's text rewriting and Gemma's casing meet.
TEXTS = [
    *CLIP_TEXTS,
    "hello </s> world", "</s> at the start", "ends with </s>", "<unk> and <pad> typed", "<eos> and <bos> typed",
    "ends with <eos>",
    "HELLO</S>", "ΟΔΟΣ ΣΟΦΙΑΣ", "İstanbul'da bir kedi", "▁underline▁pieces▁", "a.b,c!d?e(f)g[h]i{j}",
    " ".join(["long"] * 63), " ".join(["long"] * 62),
]

# What the vocabularies are trained on: enough scripts that most texts above get real pieces.
CORPUS = [
    "a photo of a cat", "a photo of a dog on the grass", "the quick brown fox jumps over the lazy dog",
    "two people walking on the beach at sunset", "a red car parked on a busy street",
    "ein hund läuft über die grüne wiese", "un chat dort sur le canapé du salon", "la casa está en la montaña",
    "東京タワーの夜景はとても綺麗です", "一只猫坐在垫子上", "사진 속의 고양이가 잔다", "кошка сидит на ковре",
    "القط يجلس على السجادة", "η γάτα κάθεται στο χαλί", "numbers 0123456789 and words", "emoji 🐶 🐱 🚀",
] + [t.lower() for t in CLIP_TEXTS if t.strip()]

SIGLIP_TINY = dict(
    text_config=dict(vocab_size=1024, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=64),
    vision_config=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                       image_size=64, patch_size=16),
)
SIGLIP2_TINY = dict(
    text_config=dict(vocab_size=1024, hidden_size=48, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=3, max_position_embeddings=64, projection_size=32),
    vision_config=dict(hidden_size=32, intermediate_size=96, num_hidden_layers=3, num_attention_heads=2,
                       image_size=48, patch_size=16),
)
# google/siglip-so400m-patch14-384 and google/siglip2-base-patch16-224, as their config.json give them,
# but 3 layers deep instead of 27 and 12: every layer is the same code under the same weight names, so
# depth adds minutes, not coverage. Widths, heads, vocabularies, patches and image sizes are the real ones.
FULL_SIZE_DEPTH = 3
SO400M_384 = dict(
    text_config=dict(vocab_size=32000, hidden_size=1152, intermediate_size=4304, num_hidden_layers=FULL_SIZE_DEPTH,
                     num_attention_heads=16, max_position_embeddings=64),
    vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=FULL_SIZE_DEPTH,
                       num_attention_heads=16, image_size=384, patch_size=14),
)
SIGLIP2_BASE_224 = dict(
    text_config=dict(vocab_size=256000, hidden_size=768, intermediate_size=3072, num_hidden_layers=FULL_SIZE_DEPTH,
                     num_attention_heads=12, max_position_embeddings=64),
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=FULL_SIZE_DEPTH,
                       num_attention_heads=12, image_size=224, patch_size=16),
)

BICUBIC, BILINEAR = 3, 2  # PIL's numbers, as preprocessor_config.json has them


def hf_config(architecture: dict) -> dict:
    """transformers' SiglipConfig arguments for one of our architectures (a registry entry's)."""
    v, t = architecture["vision"], architecture["text"]

    def tower(c: dict) -> dict:
        return dict(hidden_size=c["width"], intermediate_size=c["mlp_width"], num_hidden_layers=c["layers"],
                    num_attention_heads=c["heads"])

    return dict(
        text_config=dict(vocab_size=t["vocab_size"], max_position_embeddings=t["context_length"],
                         projection_size=t["embed_dim"], **tower(t)),
        vision_config=dict(image_size=v["image_size"], patch_size=v["patch_size"], **tower(v)),
    )


def build_for_entry(spec, folder: Path, seed: int, tiny: bool = False):
    """transformers' SiglipModel of a registry entry's shape (or a tiny one), saved as published."""
    version1 = spec.tokenizer.kind == "siglip_sentencepiece"
    config = (SIGLIP_TINY if version1 else SIGLIP2_TINY) if tiny else hf_config(spec.architecture)
    return build_hf_siglip(config, folder, seed, "sentencepiece" if version1 else "gemma",
                           BICUBIC if spec.image.resample == "bicubic" else BILINEAR)

# The registry entries the tiny checkpoints are converted as: one of each family's kinds.
SIGLIP_MODEL, SIGLIP2_MODEL = "siglip_so400m_patch14_384", "siglip2_base_patch16_224"


def load_tokenizer(model: str, folder: Path):
    """The registry entry's tokenizer, read from ``folder`` (a transformers folder or ours)."""
    from handspring_models import find_model
    from handspring_models.text import load_tokenizer as load

    return load(find_model(model).tokenizer, folder)


def convert(src: Path, model: str, out: Path) -> Path:
    """Our converter, through its command line."""
    from handspring_models.weights.__main__ import main

    assert main(["convert", str(src), "--model", model, "--out", str(out)]) == 0
    return out


def train_sentencepiece(folder: Path, vocab_size: int = 600) -> None:
    """spiece.model with T5's layout (SigLIP's): <pad> 0, </s> 1, <unk> 2, no <s>; then
    transformers' SiglipTokenizer writes its tokenizer_config.json beside it."""
    import sentencepiece
    from transformers import SiglipTokenizer

    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 10), model_writer=buffer, vocab_size=vocab_size, hard_vocab_limit=False,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=0.995, minloglevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(buffer.getvalue())
    SiglipTokenizer(vocab_file=str(folder / "spiece.model")).save_pretrained(folder)


def train_gemma(folder: Path, vocab_size: int = 700) -> None:
    """A byte-fallback BPE with Gemma's layout (<pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4, byte
    tokens), saved by transformers' GemmaTokenizer with SigLIP 2's settings (no <bos>, <eos> added,
    right padding, 64 tokens)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                        show_progress=False))
    saved = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in saved["merges"]]
    GemmaTokenizer(vocab=saved["vocab"], merges=merges, add_bos_token=False, add_eos_token=True,
                   padding_side="right", model_max_length=64).save_pretrained(folder)


def build_hf_siglip(config: dict, folder: Path, seed: int, tokenizer: str, resample: int):
    """transformers' SiglipModel with scaled random weights, saved as a published folder is."""
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SiglipModel(SiglipConfig(**config)).eval()
    scale_weights(model, seed)
    with torch.no_grad():  # scale_weights leaves these as initialised (zero); give them values to carry
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-9.5)
    model.save_pretrained(folder)
    if tokenizer == "sentencepiece":
        train_sentencepiece(folder)
    else:
        train_gemma(folder)
    size = config["vision_config"]["image_size"]
    SiglipImageProcessorPil(size={"height": size, "width": size}, resample=resample,
                            do_convert_rgb=True if tokenizer == "sentencepiece" else None).save_pretrained(folder)
    return model


@pytest.fixture(scope="session")
def siglip_tiny_hf(tmp_path_factory):
    """(SiglipModel, folder): a tiny SigLIP (SentencePiece, bicubic)."""
    folder = tmp_path_factory.mktemp("siglip_tiny_hf")
    return build_hf_siglip(SIGLIP_TINY, folder, seed=11, tokenizer="sentencepiece", resample=BICUBIC), folder


@pytest.fixture(scope="session")
def siglip2_tiny_hf(tmp_path_factory):
    """(SiglipModel, folder): a tiny SigLIP 2 FixRes (Gemma tokenizer, bilinear, a text head
    narrower than its tower)."""
    folder = tmp_path_factory.mktemp("siglip2_tiny_hf")
    return build_hf_siglip(SIGLIP2_TINY, folder, seed=12, tokenizer="gemma", resample=BILINEAR), folder


# The full-size ones live in their one test's tmp_path, which pytest removes as soon as the test
# passes (tmp_path_retention_policy): so400m alone is 7 GB with its conversion.
@pytest.fixture
def siglip_so400m_hf(tmp_path):
    folder = tmp_path / "siglip_so400m_384_hf"
    return build_hf_siglip(SO400M_384, folder, seed=13, tokenizer="sentencepiece", resample=BICUBIC), folder


@pytest.fixture
def siglip2_base_hf(tmp_path):
    folder = tmp_path / "siglip2_base_224_hf"
    return build_hf_siglip(SIGLIP2_BASE_224, folder, seed=14, tokenizer="gemma", resample=BILINEAR), folder


@pytest.fixture(scope="session")
def siglip_tiny_weights(siglip_tiny_hf, tmp_path_factory) -> Path:
    return convert(siglip_tiny_hf[1], SIGLIP_MODEL, tmp_path_factory.mktemp("siglip_tiny_weights"))


@pytest.fixture(scope="session")
def siglip2_tiny_weights(siglip2_tiny_hf, tmp_path_factory) -> Path:
    return convert(siglip2_tiny_hf[1], SIGLIP2_MODEL, tmp_path_factory.mktemp("siglip2_tiny_weights"))
