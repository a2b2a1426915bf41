"""Every model Handspring serves: one ``ModelSpec`` entry each.

An entry says all there is to know about a model outside its maths: its names, which family's
code runs it (``handspring_models.<family>``), its published shape, the weight file of each
modality, its tokenizer and image preprocessing, what vectors Weaviate's own container returns
for it, where to download it and under what licence. ``load``, the weights command line, the
service's settings and ``/meta`` all read it; no model name appears in code outside this file.

Adding a model of an existing family is one entry in ``MODELS``. A new architecture also needs a
family subpackage exporting ``Embedder``, ``convert`` and ``random_weights``.

Features name one modality of one model (``clip_vit_b_32_image``) or the whole model
(``clip_vit_b_32``); a feature loads only the weight files of its modalities.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .inputs.image import CLIP_MEAN, CLIP_STD, ImageRecipe


@dataclass(frozen=True)
class TokenizerSpec:
    """``kind`` picks the loader in ``handspring_models.text``; ``files`` are the files of the
    weights folder it reads; ``options`` are the kind's own settings (cleaning, casing, padding)."""

    kind: str
    files: tuple[str, ...]
    context_length: int
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Source:
    """Where ``download`` gets the model and in which published ``format`` ``convert`` reads it.
    ``files``: the files of the Hub repository that the conversion needs."""

    format: str
    repo_id: str | None = None
    url: str | None = None
    files: tuple[str, ...] = ()
    # A model published as two repositories (sentence-transformers' multilingual CLIP): the one
    # holding its image tower, and the files of it that the conversion needs.
    image_repo_id: str | None = None
    image_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # the subpackage handspring_models.<family> that runs it
    description: str
    license: str
    source: Source
    modalities: tuple[str, ...]
    components: Mapping[str, str]  # modality -> weight file stem (ImageBind's image and video share "vision")
    architecture: Mapping[str, object]  # the published shape, as the family's config ``to_dict()`` gives it
    normalize: bool  # whether Weaviate's own container returns L2-normalized vectors for this model
    tokenizer: TokenizerSpec | None = None
    image: ImageRecipe | None = None
    aliases: tuple[str, ...] = ()

    @property
    def features(self) -> dict[str, tuple[str, ...]]:
        """feature name -> the modalities it serves: the whole model, then one per modality."""
        return {self.name: self.modalities, **{f"{self.name}_{m}": (m,) for m in self.modalities}}

    def family_module(self):
        """The family's code: imported on first use, so a server loads only its own model's."""
        return importlib.import_module(f"{__package__}.{self.family}")


def _clip_architecture(embed_dim: int, image_size: int, patch_size: int, vision_width: int, vision_layers: int,
                       text_width: int, text_layers: int, activation: str = "quick_gelu") -> dict:
    """``handspring_models.clip.CLIPConfig.to_dict()`` of an OpenAI-shaped CLIP (64-wide heads)."""
    return {
        "embed_dim": embed_dim,
        "vision": {"image_size": image_size, "patch_size": patch_size, "width": vision_width,
                   "layers": vision_layers, "heads": vision_width // 64},
        "text": {"context_length": 77, "vocab_size": 49408, "width": text_width, "layers": text_layers,
                 "heads": text_width // 64},
        "activation": activation,
        "layer_norm_eps": 1e-5,
    }


# OpenAI's BPE vocabulary, shared by every OpenAI CLIP and by ImageBind; checkpoints that carry
# none (OpenAI's .pt, imagebind_huge.pth) take it from the Hub repository where it is published.
CLIP_BPE = TokenizerSpec("clip_bpe", ("merges.txt",), 77,
                         MappingProxyType({"published_in": "openai/clip-vit-base-patch32"}))
CLIP_TOWERS = {"text": "text", "image": "image"}
OPENAI_LICENSE = "MIT"
_HF_CLIP_FILES = ("config.json", "merges.txt", "vocab.json", "model.safetensors")


def _openai_clip(name: str, repo_id: str, description: str, image_size: int, patch_size: int, vision_width: int,
                 vision_layers: int, text_width: int, embed_dim: int, aliases: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec(
        name=name, family="clip", description=description, license=OPENAI_LICENSE,
        source=Source("hf_clip", repo_id=repo_id, files=_HF_CLIP_FILES),
        modalities=("text", "image"), components=CLIP_TOWERS,
        architecture=_clip_architecture(embed_dim, image_size, patch_size, vision_width, vision_layers,
                                        text_width, 12),
        normalize=True, tokenizer=CLIP_BPE, image=ImageRecipe(image_size, mean=CLIP_MEAN, std=CLIP_STD),
        aliases=(repo_id, *aliases),
    )


def _siglip_architecture(image_size: int, patch_size: int, vocab_size: int, width: int = 1152, layers: int = 27,
                         heads: int = 16, mlp_width: int = 4304) -> dict:
    """``handspring_models.siglip.SiglipConfig.to_dict()``: both towers of one width (so400m by
    default), 64 tokens of text."""
    tower = {"width": width, "layers": layers, "heads": heads, "mlp_width": mlp_width}
    return {
        "vision": {"image_size": image_size, "patch_size": patch_size, **tower},
        "text": {"context_length": 64, "vocab_size": vocab_size, **tower, "embed_dim": width},
        "activation": "gelu_tanh",
        "layer_norm_eps": 1e-6,
    }


# SigLIP: SentencePiece with transformers' SiglipTokenizer rewriting (lower-case, no ASCII
# punctuation, collapsed whitespace). SigLIP 2: Gemma's tokenizer on the lower-cased text.
SIGLIP_SENTENCEPIECE = TokenizerSpec("siglip_sentencepiece", ("spiece.model", "tokenizer_config.json"), 64)
GEMMA_LOWER_CASE = TokenizerSpec("gemma", ("tokenizer.json",), 64, MappingProxyType({"lowercase": True}))
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
GOOGLE_APACHE = "Apache-2.0"


def _siglip(name: str, repo_id: str, description: str, architecture: dict, version: int,
            weaviate_tag: str | None = None) -> ModelSpec:
    tokenizer = SIGLIP_SENTENCEPIECE if version == 1 else GEMMA_LOWER_CASE
    return ModelSpec(
        name=name, family="siglip", description=description, license=GOOGLE_APACHE,
        source=Source("hf_siglip", repo_id=repo_id,
                      files=("config.json", "model.safetensors", "preprocessor_config.json", *tokenizer.files)),
        modalities=("text", "image"), components=CLIP_TOWERS, architecture=architecture,
        normalize=False,  # Weaviate's SigLIP path returns get_*_features as they come
        tokenizer=tokenizer,
        image=ImageRecipe(architecture["vision"]["image_size"], resize="squash",
                          resample="bicubic" if version == 1 else "bilinear", mean=SIGLIP_MEAN, std=SIGLIP_STD),
        aliases=(repo_id, *((weaviate_tag,) if weaviate_tag else ())),
    )


OPEN_CLIP_FILES = ("open_clip_config.json", "open_clip_model.safetensors", "merges.txt", "tokenizer.json")
OPEN_CLIP_LICENSE = "MIT"  # the LAION OpenCLIP models' cards
# open_clip's tokenizer is OpenAI's BPE, but a text gets the special tokens by typing these names
# (a typed "<|endoftext|>" is plain text there).
OPEN_CLIP_BPE = dataclasses.replace(CLIP_BPE, options=MappingProxyType(
    {**CLIP_BPE.options, "typed_specials": ("<start_of_text>", "<end_of_text>")}))


def _open_clip(name: str, tag: str, repo_id: str, description: str, patch_size: int, activation: str) -> ModelSpec:
    """A LAION OpenCLIP of OpenAI's ViT-B shape, as open_clip publishes it on the Hub."""
    return ModelSpec(
        name=name, family="clip", description=description, license=OPEN_CLIP_LICENSE,
        source=Source("open_clip", repo_id=repo_id, files=OPEN_CLIP_FILES),
        modalities=("text", "image"), components=CLIP_TOWERS,
        architecture=_clip_architecture(512, 224, patch_size, 768, 12, 512, 12, activation),
        normalize=True,  # Weaviate's open_clip path L2-normalizes
        tokenizer=OPEN_CLIP_BPE, image=ImageRecipe(224),  # open_clip's preprocessing is OpenAI's
        aliases=(tag, repo_id),
    )


def _multilingual_text(kind: str, vocab_size: int, layers: int, max_positions: int, pad_id: int, eps: float,
                       projection: str, hidden: int | None, mask_pad_ids: bool, type_vocab_size: int = 1) -> dict:
    """``multilingual_clip.text_towers.TextTowerConfig.to_dict()`` of a base-size (768-wide) encoder."""
    return {"kind": kind, "vocab_size": vocab_size, "width": 768, "layers": layers, "heads": 12,
            "intermediate": 3072, "max_positions": max_positions, "pad_id": pad_id, "layer_norm_eps": eps,
            "projection": projection, "projection_hidden": hidden, "embed_dim": 512,
            "type_vocab_size": type_vocab_size, "mask_pad_ids": mask_pad_ids}


def _b32_vision() -> dict:
    return {"image_size": 224, "patch_size": 32, "width": 768, "layers": 12, "heads": 12}


ST_CLIP_REPO = "sentence-transformers/clip-ViT-B-32"
ST_CLIP_FILES = ("modules.json", "0_CLIPModel/*")
ST_CLIP_TOKENIZER = TokenizerSpec("hf_tokenizer", ("tokenizer.json",), 77, MappingProxyType({"end_token": "<|endoftext|>"}))
# sentence-transformers' image processor (transformers' CLIPImageProcessor) floors the crop offset.
ST_CLIP_IMAGE = ImageRecipe(224, crop_rounding="floor")

IMAGEBIND_MODALITIES = ("text", "image", "audio", "video", "depth", "thermal", "imu")

MODELS: tuple[ModelSpec, ...] = (
    _openai_clip("clip_vit_b_32", "openai/clip-vit-base-patch32", "OpenAI CLIP ViT-B/32 (2021), 512-d",
                 224, 32, 768, 12, 512, 512),
    _openai_clip("clip_vit_b_16", "openai/clip-vit-base-patch16", "OpenAI CLIP ViT-B/16, 512-d",
                 224, 16, 768, 12, 512, 512, aliases=("openai-clip-vit-base-patch16",)),
    _openai_clip("clip_vit_l_14", "openai/clip-vit-large-patch14", "OpenAI CLIP ViT-L/14, 768-d",
                 224, 14, 1024, 24, 768, 768),
    _openai_clip("clip_vit_l_14_336", "openai/clip-vit-large-patch14-336", "OpenAI CLIP ViT-L/14 at 336 px, 768-d",
                 336, 14, 1024, 24, 768, 768),
    _open_clip("openclip_vit_b_16_laion2b", "ViT-B-16-laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
               "LAION OpenCLIP ViT-B/16 trained on LAION-2B (exact GELU), 512-d", 16, "gelu"),
    _open_clip("openclip_vit_b_32_quickgelu_laion400m", "ViT-B-32-quickgelu-laion400m_e32",
               "timm/vit_base_patch32_clip_224.laion400m_e32",
               "LAION OpenCLIP ViT-B/32 trained on LAION-400M (QuickGELU), 512-d", 32, "quick_gelu"),
    ModelSpec(
        name="openclip_xlm_roberta_base_vit_b_32_laion5b", family="multilingual_clip",
        description="LAION OpenCLIP ViT-B/32 with an XLM-RoBERTa base text tower (100+ languages), 512-d",
        license="MIT",
        source=Source("open_clip", repo_id="laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
                      files=OPEN_CLIP_FILES),
        modalities=("text", "image"), components=CLIP_TOWERS,
        architecture={
            "embed_dim": 512, "vision": _b32_vision(), "activation": "gelu", "layer_norm_eps": 1e-5,
            "context_length": 77,
            "text": _multilingual_text("xlm_roberta", 250002, 12, 514, 1, 1e-5, "mlp", 640, mask_pad_ids=True),
        },
        normalize=True,  # Weaviate's open_clip path L2-normalizes
        # open_clip's Hugging Face tokenizers: ftfy, HTML unescaped twice, whitespace collapsed; 77 tokens, pad id 1.
        tokenizer=TokenizerSpec("hf_tokenizer", ("tokenizer.json",), 77,
                                MappingProxyType({"clean": "open_clip_whitespace"})),
        image=ImageRecipe(224),
        aliases=("xlm-roberta-base-ViT-B-32-laion5b_s13b_b90k", "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k"),
    ),
    ModelSpec(
        name="st_clip_vit_b_32", family="clip",
        description="OpenAI CLIP ViT-B/32 as sentence-transformers publishes and runs it (transformers' "
                    "tokenizer without OpenAI's text cleaning, a floored crop), raw projections, 512-d",
        license="MIT (OpenAI's CLIP weights)",
        source=Source("sentence_transformers", repo_id=ST_CLIP_REPO, files=ST_CLIP_FILES),
        modalities=("text", "image"), components=CLIP_TOWERS,
        architecture=_clip_architecture(512, 224, 32, 768, 12, 512, 12),
        normalize=False,  # Weaviate's sentence-transformers path returns the raw projections
        tokenizer=ST_CLIP_TOKENIZER, image=ST_CLIP_IMAGE,
        aliases=("sentence-transformers-clip-ViT-B-32", ST_CLIP_REPO),
    ),
    ModelSpec(
        name="st_clip_vit_b_32_multilingual_v1", family="multilingual_clip",
        description="sentence-transformers' multilingual CLIP: a DistilBERT text tower (50+ languages, mean "
                    "pooling, Dense 768->512) distilled into OpenAI's ViT-B/32 image space, raw projections, 512-d",
        license="Apache-2.0 (text model); MIT (OpenAI's CLIP image tower)",
        source=Source("sentence_transformers", repo_id="sentence-transformers/clip-ViT-B-32-multilingual-v1",
                      files=("modules.json", "config.json", "sentence_bert_config.json", "tokenizer.json",
                             "model.safetensors", "pytorch_model.bin", "1_Pooling/*", "2_Dense/*"),
                      image_repo_id=ST_CLIP_REPO, image_files=ST_CLIP_FILES),
        modalities=("text", "image"), components=CLIP_TOWERS,
        architecture={
            "embed_dim": 512, "vision": _b32_vision(), "activation": "quick_gelu", "layer_norm_eps": 1e-5,
            "context_length": 128,  # sentence_bert_config.json's max_seq_length
            "text": _multilingual_text("distilbert", 119547, 6, 512, 0, 1e-12, "linear", None, mask_pad_ids=False),
        },
        normalize=False,  # Weaviate's sentence-transformers path returns the raw projections
        tokenizer=TokenizerSpec("hf_tokenizer", ("tokenizer.json",), 128),
        image=ST_CLIP_IMAGE,
        aliases=("sentence-transformers-clip-ViT-B-32-multilingual-v1",
                 "sentence-transformers/clip-ViT-B-32-multilingual-v1"),
    ),
    ModelSpec(
        name="imagebind_huge", family="imagebind",
        description="Meta ImageBind (huge): text, image, audio, video, depth, thermal and IMU in one 1024-d space",
        license="CC BY-NC-SA 4.0 (non-commercial use only)",
        source=Source("imagebind_official", url="https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"),
        modalities=IMAGEBIND_MODALITIES,
        components={"text": "text", "image": "vision", "video": "vision", "audio": "audio", "depth": "depth",
                    "thermal": "thermal", "imu": "imu"},
        architecture={},  # ImageBindConfig()'s defaults are the huge model
        normalize=True,  # Weaviate's multi2vec-bind returns unit vectors
        tokenizer=CLIP_BPE, image=ImageRecipe(224),
        aliases=("imagebind",),
    ),
    _siglip("siglip_so400m_patch14_384", "google/siglip-so400m-patch14-384",
            "Google SigLIP so400m/14 at 384 px (2023), 1152-d, English", _siglip_architecture(384, 14, 32000), 1),
    _siglip("siglip_so400m_patch16_256_i18n", "google/siglip-so400m-patch16-256-i18n",
            "Google SigLIP so400m/16 at 256 px, multilingual, 1152-d", _siglip_architecture(256, 16, 250000), 1,
            weaviate_tag="google-siglip-so400m-patch16-256-i18n"),
    _siglip("siglip2_base_patch16_224", "google/siglip2-base-patch16-224",
            "Google SigLIP 2 base/16 at 224 px (2025), multilingual, 768-d: the family's CPU default",
            _siglip_architecture(224, 16, 256000, width=768, layers=12, heads=12, mlp_width=3072), 2),
    _siglip("siglip2_so400m_patch16_384", "google/siglip2-so400m-patch16-384",
            "Google SigLIP 2 so400m/16 at 384 px, multilingual, 1152-d", _siglip_architecture(384, 16, 256000), 2,
            weaviate_tag="google-siglip2-so400m-patch16-384"),
    _siglip("siglip2_so400m_patch16_512", "google/siglip2-so400m-patch16-512",
            "Google SigLIP 2 so400m/16 at 512 px, multilingual, 1152-d", _siglip_architecture(512, 16, 256000), 2,
            weaviate_tag="google-siglip2-so400m-patch16-512"),
)


# What a command or function given no model uses.
DEFAULT_MODEL = "clip_vit_b_32"


class UnknownModelError(ValueError):
    """No model or feature has that name or alias."""


def _index() -> tuple[dict[str, ModelSpec], dict[str, tuple[ModelSpec, tuple[str, ...]]]]:
    models: dict[str, ModelSpec] = {}
    features: dict[str, tuple[ModelSpec, tuple[str, ...]]] = {}
    for spec in MODELS:
        for key in (spec.name, *spec.aliases):
            if key in models:
                raise RuntimeError(f"registry: {key!r} names both {models[key].name} and {spec.name}")
            models[key] = spec
        for feature, modalities in spec.features.items():
            features[feature] = (spec, modalities)
    return models, features


_MODELS, _FEATURES = _index()

# feature -> (model name, modalities it serves)
FEATURES: dict[str, tuple[str, tuple[str, ...]]] = {f: (s.name, m) for f, (s, m) in _FEATURES.items()}


def list_models() -> list[ModelSpec]:
    return list(MODELS)


def find_model(name: str) -> ModelSpec:
    """A model by its canonical name or any alias (a Weaviate image tag, a Hub repo id)."""
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(s.name for s in MODELS)}") from None


def find_feature(name: str) -> tuple[ModelSpec, str, tuple[str, ...]]:
    """(model, canonical feature name, modalities) for a feature name, or a model's name or alias
    (which means the whole model)."""
    if name in _FEATURES:
        spec, modalities = _FEATURES[name]
        return spec, name, modalities
    if name in _MODELS:
        spec = _MODELS[name]
        return spec, spec.name, spec.modalities
    raise UnknownModelError(f"unknown feature {name!r}; known: {', '.join(_FEATURES)} (or a model's alias)")
