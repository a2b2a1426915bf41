"""Our SigLIP towers equal transformers' ``SiglipModel`` on the same weights and inputs:
``get_image_features`` / ``get_text_features``, fp32 cosine >= 0.99999 and norms equal to 1e-5.
The model alone here (pixels and ids fed to both), on tiny checkpoints; the whole pipeline, at full
size too, is tested through the library's ``load`` in test_embedder.py."""

import numpy as np
import pytest
import torch

from handspring_models.runtime.kernels import pack_linear_weights
from handspring_models.siglip import checkpoint
from handspring_models.siglip.model import SigLIP
from tests.siglip.conftest import SIGLIP2_MODEL, SIGLIP_MODEL, TEXTS, load_tokenizer

EXACT = 0.99999


def ours_from_folder(folder) -> SigLIP:
    config, state = checkpoint.load_hf_folder(folder)
    with torch.device("meta"):
        model = SigLIP(config)
    model.load_state_dict(state, strict=True, assign=True)
    model = model.eval().requires_grad_(False)
    pack_linear_weights(model)
    return model


def features(output) -> np.ndarray:
    return getattr(output, "pooler_output", output).numpy()  # transformers 5 returns a model output


def assert_same_vectors(got: np.ndarray, want: np.ndarray) -> None:
    cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cos.min() >= EXACT, cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(want, axis=-1), rtol=1e-5)


def random_pixels(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def token_ids(folder, model: str, texts) -> torch.Tensor:
    tokenizer = load_tokenizer(model, folder)
    return torch.tensor([tokenizer(t) for t in texts])


def check_against_transformers(hf_model, folder, model: str, n_images: int, texts) -> None:
    ours = ours_from_folder(folder)
    size = hf_model.config.vision_config.image_size
    pixels = random_pixels(n_images, size)
    with torch.inference_mode():
        got = ours.encode_image(pixels).numpy()
        want = features(hf_model.get_image_features(pixel_values=pixels))
    assert got.shape == (n_images, hf_model.config.vision_config.hidden_size) and got.dtype == np.float32
    assert_same_vectors(got, want)

    ids = token_ids(folder, model, texts)
    with torch.inference_mode():
        got = ours.encode_text(ids).numpy()
        want = features(hf_model.get_text_features(input_ids=ids))  # no attention mask, as trained
    assert_same_vectors(got, want)


def test_tiny_siglip_matches_transformers(siglip_tiny_hf):
    check_against_transformers(*siglip_tiny_hf, SIGLIP_MODEL, 4, TEXTS)


def test_tiny_siglip2_matches_transformers(siglip2_tiny_hf):
    check_against_transformers(*siglip2_tiny_hf, SIGLIP2_MODEL, 4, TEXTS)


def test_loss_scalars_are_kept(siglip_tiny_hf):
    model = ours_from_folder(siglip_tiny_hf[1])
    assert model.logit_scale.item() == pytest.approx(2.3) and model.logit_bias.item() == pytest.approx(-9.5)


def test_text_vector_does_not_depend_on_its_batch(siglip_tiny_hf):
    model = ours_from_folder(siglip_tiny_hf[1])
    ids = token_ids(siglip_tiny_hf[1], SIGLIP_MODEL, TEXTS)
    with torch.inference_mode():
        together = model.encode_text(ids).numpy()
        alone = np.concatenate([model.encode_text(row[None]).numpy() for row in ids])
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-5)
