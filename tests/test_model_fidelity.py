"""Our CLIP equals the reference implementations on the same weights and the same inputs.

- transformers' CLIPModel (a Hugging Face checkpoint, converted by our converter);
- OpenAI's own model.py (a checkpoint in OpenAI's layout, as a plain state dict and as TorchScript).
Tiny checkpoints run in seconds; the full-size ViT-B/32 ones are marked slow.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import handspring_models
from tests.conftest import TINY, convert, encode, scale_weights
from tests.test_tokenizer import TEXTS

EXACT = 0.99999


def hf_image_features(model, pixels: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    out = getattr(out, "pooler_output", out)  # transformers 5 may return a model output
    return F.normalize(out, dim=-1).numpy()


def hf_text_features(model, ids: list[torch.Tensor], context: int = 77) -> np.ndarray:
    tokens = torch.zeros(len(ids), context, dtype=torch.long)  # padded to the full context, as OpenAI does
    for row, t in enumerate(ids):
        tokens[row, : len(t)] = t
    with torch.no_grad():
        out = model.get_text_features(input_ids=tokens)
    out = getattr(out, "pooler_output", out)
    return F.normalize(out, dim=-1).numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def check_against_hf(hf_model, weights, photos):
    ours = handspring_models.load("clip_vit_b_32", weights, precision="fp32")
    pixels = [ours.prepare("image", img) for img in photos.values()]
    got = ours.encode("image", pixels)
    want = hf_image_features(hf_model, torch.stack(pixels))
    assert got.shape == (len(photos), hf_model.config.projection_dim) and got.dtype == np.float32
    assert cosines(got, want).min() >= EXACT, dict(zip(photos, cosines(got, want)))

    ids = [ours.prepare("text", t) for t in TEXTS]
    got = ours.encode("text", ids)
    want = hf_text_features(hf_model, ids)
    assert cosines(got, want).min() >= EXACT, dict(zip(TEXTS, cosines(got, want)))


def test_tiny_matches_transformers(tiny_hf, tiny_weights, photos):
    check_against_hf(tiny_hf[0], tiny_weights, photos)


@pytest.mark.slow
def test_full_size_matches_transformers(full_hf, full_weights, photos):
    check_against_hf(full_hf[0], full_weights, photos)


@pytest.mark.slow
def test_full_size_end_to_end_with_transformers_processor(full_hf, full_weights, photos):
    """From encoded image bytes to vector, against transformers' own preprocessing, on photos whose
    crop offset the two pipelines agree on."""
    from transformers import CLIPImageProcessor

    names = ["astronaut_rgb", "chelsea_rgb_451x300", "camera_L", "astronaut_large_1600x1200"]
    ours = handspring_models.load("clip_vit_b_32", full_weights, precision="fp32")
    got = ours.embed_images([encode(photos[n], "PNG") for n in names])
    pixels = CLIPImageProcessor()(images=[photos[n] for n in names], return_tensors="pt")["pixel_values"]
    assert cosines(got, hf_image_features(full_hf[0], pixels)).min() >= EXACT


def test_outputs_are_unit_vectors(tiny_weights, photos):
    model = handspring_models.load("clip_vit_b_32", tiny_weights)
    for vectors in (model.embed_texts(TEXTS), model.embed_images(list(photos.values()))):
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)


def test_text_result_does_not_depend_on_batch(tiny_weights):
    """Batches pad to their longest text; the causal mask keeps padding from changing any row."""
    model = handspring_models.load("clip_vit_b_32", tiny_weights)
    alone = np.concatenate([model.embed_texts([t]) for t in TEXTS])
    together = model.embed_texts(TEXTS)
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_texts_pad_to_an_even_width_within_the_context():
    from handspring_models.clip.embedder import pad_causal

    for length, width in ((5, 6), (6, 6), (76, 76), (77, 77)):
        tokens, ends = pad_causal([torch.arange(1, length + 1)], 77)
        assert tokens.shape == (1, width)
        assert ends.tolist() == [length - 1]


def test_even_padding_changes_no_text_vector(tiny_weights):
    """The extra padding position is after every end-of-text token, so the causal mask hides it."""
    model = handspring_models.load("clip_vit_b_32", tiny_weights)
    for text in TEXTS:
        ids = model.prepare("text", text)
        tight = F.normalize(model.model.encode_text(ids[None], torch.tensor([len(ids) - 1])), dim=-1)
        np.testing.assert_allclose(model.encode("text", [ids]), tight.numpy(), atol=1e-6)


def test_image_result_does_not_depend_on_batch(tiny_weights, photos):
    model = handspring_models.load("clip_vit_b_32", tiny_weights)
    images = list(photos.values())
    alone = np.concatenate([model.embed_images([img]) for img in images])
    np.testing.assert_allclose(alone, model.embed_images(images), atol=1e-5)


def test_bytes_and_pil_give_the_same_vector(tiny_weights, photos):
    model = handspring_models.load("clip_vit_b_32", tiny_weights)
    image = photos["chelsea_rgb_451x300"]
    np.testing.assert_allclose(model.embed_images([encode(image, "PNG")]), model.embed_images([image]), atol=1e-6)


def test_empty_input_gives_empty_matrix(tiny_weights):
    model = handspring_models.load("clip_vit_b_32", tiny_weights)
    assert model.embed_texts([]).shape == (0, model.dim)


# ---------------------------------------------------------------- OpenAI's checkpoint layout

def openai_tiny_model(module, seed=3):
    """OpenAI's CLIP class, small; heads are width // 64 in OpenAI's code."""
    torch.manual_seed(seed)
    model = module.CLIP(embed_dim=32, image_resolution=224, vision_layers=2, vision_width=128, vision_patch_size=32,
                        context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2,
                        transformer_layers=2).eval()
    scale_weights(model, seed)
    return model


def check_against_openai(model, weights, photos, openai_tokenizer):
    ours = handspring_models.load("clip_vit_b_32", weights, precision="fp32")
    pixels = torch.stack([ours.prepare("image", img) for img in photos.values()])
    with torch.no_grad():
        want = F.normalize(model.encode_image(pixels), dim=-1).numpy()
    assert cosines(ours.encode("image", list(pixels)), want).min() >= EXACT

    ids = [ours.prepare("text", t) for t in TEXTS]
    tokens = torch.zeros(len(ids), 77, dtype=torch.long)
    for row, t in enumerate(ids):
        tokens[row, : len(t)] = t
    with torch.no_grad():
        want = F.normalize(model.encode_text(tokens), dim=-1).numpy()
    assert cosines(ours.encode("text", ids), want).min() >= EXACT


@pytest.fixture(scope="module")
def openai_model(openai_clip_model_module):
    return openai_tiny_model(openai_clip_model_module)


def test_openai_state_dict_checkpoint(openai_model, tmp_path, bpe_path, photos, openai_tokenizer):
    torch.save(openai_model.state_dict(), tmp_path / "ViT-B-32.pt")
    weights = convert(tmp_path / "ViT-B-32.pt", tmp_path / "out", "--merges", str(bpe_path))
    check_against_openai(openai_model, weights, photos, openai_tokenizer)


def test_openai_torchscript_checkpoint(openai_model, tmp_path, bpe_path, photos, openai_tokenizer):
    """OpenAI's released .pt files are TorchScript archives (made by tracing)."""
    example = (torch.zeros(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long))
    with torch.no_grad():
        traced = torch.jit.trace(openai_model, example, check_trace=False)
    torch.jit.save(traced, str(tmp_path / "ViT-B-32.pt"))
    weights = convert(tmp_path / "ViT-B-32.pt", tmp_path / "out", "--merges", str(bpe_path))
    check_against_openai(openai_model, weights, photos, openai_tokenizer)


def test_openai_checkpoint_finds_bpe_beside_it(openai_model, tmp_path, bpe_path):
    import shutil

    torch.save(openai_model.state_dict(), tmp_path / "ViT-B-32.pt")
    shutil.copy(bpe_path, tmp_path / bpe_path.name)
    weights = convert(tmp_path / "ViT-B-32.pt", tmp_path / "out")
    assert (weights / "merges.txt").is_file()


def test_hf_pytorch_bin_checkpoint(tiny_hf, tmp_path, photos):
    """Older Hub snapshots ship pytorch_model.bin instead of model.safetensors."""
    import shutil

    model, folder = tiny_hf
    src = tmp_path / "hf_bin"
    src.mkdir()
    for name in ("config.json", "merges.txt"):
        shutil.copy(folder / name, src / name)
    torch.save(model.state_dict(), src / "pytorch_model.bin")
    check_against_hf(model, convert(src, tmp_path / "out"), {"a": photos["astronaut_rgb"]})


def test_gelu_checkpoint(tmp_path, bpe_path, photos):
    """Some CLIP-family checkpoints use exact GELU instead of QuickGELU."""
    from tests.conftest import build_hf_clip

    config = {**TINY, "text_config": {**TINY["text_config"], "hidden_act": "gelu"},
              "vision_config": {**TINY["vision_config"], "hidden_act": "gelu"}}
    model = build_hf_clip(config, tmp_path / "hf", bpe_path, seed=5)
    check_against_hf(model, convert(tmp_path / "hf", tmp_path / "out"), {"a": photos["coffee_rgb_600x400"]})


# ---------------------------------------------------------------- faster precisions

@pytest.mark.slow
def test_bf16_stays_close_to_fp32(full_weights, photos):
    exact = handspring_models.load("clip_vit_b_32", full_weights, precision="fp32")
    fast = handspring_models.load("clip_vit_b_32", full_weights, precision="bf16")
    images = [encode(p.convert("RGB"), "JPEG", quality=95) for p in photos.values()]
    assert cosines(fast.embed_images(images), exact.embed_images(images)).min() >= 0.999
    assert cosines(fast.embed_texts(TEXTS), exact.embed_texts(TEXTS)).min() >= 0.999
