"""SigLIP through the library as a user meets it: a transformers folder converted by our command
line, loaded by ``handspring_models.load``, fed encoded images and raw strings, against
transformers' own processor and model on the same folder."""

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open

import handspring_models
from handspring_models import WeightsError
from tests.conftest import encode
from tests.siglip.conftest import SIGLIP2_MODEL, SIGLIP_MODEL, TEXTS, convert
from tests.siglip.test_images import transparent_photos
from tests.siglip.test_model import assert_same_vectors, features


def reference_image_features(hf_model, folder, images) -> np.ndarray:
    from transformers import SiglipImageProcessorPil
    from transformers.image_transforms import convert_to_rgb

    processor = SiglipImageProcessorPil.from_pretrained(folder)
    if not processor.do_convert_rgb:  # SigLIP 2's published config: transformers fails on non-RGB images
        images = [convert_to_rgb(image, return_numpy=False) for image in images]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        return features(hf_model.get_image_features(pixel_values=pixels))


def reference_text_features(hf_model, folder, texts, lower_case: bool) -> np.ndarray:
    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        ids = tokenizer([t.lower() if lower_case else t for t in texts], padding="max_length", max_length=64,
                        truncation=True, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return features(hf_model.get_text_features(input_ids=ids))


def lossless(image) -> bytes:
    """The image as encoded bytes, pixel for pixel (TIFF where PNG cannot hold the mode, e.g. CMYK)."""
    return encode(image, "TIFF" if image.mode == "CMYK" else "PNG")


def check_end_to_end(hf_model, folder, weights, model: str, images: dict, texts) -> None:
    ours = handspring_models.load(model, weights_dir=weights, precision="fp32")
    got = ours.embed_images([lossless(image) for image in images.values()])
    assert got.shape == (len(images), hf_model.config.vision_config.hidden_size) and got.dtype == np.float32
    assert_same_vectors(got, reference_image_features(hf_model, folder, list(images.values())))
    got = ours.embed_texts(texts)
    assert_same_vectors(got, reference_text_features(hf_model, folder, texts, lower_case=model == SIGLIP2_MODEL))


@pytest.fixture(scope="module")
def siglip(siglip_tiny_weights):
    return handspring_models.load(SIGLIP_MODEL, weights_dir=siglip_tiny_weights, precision="fp32")


def test_siglip_matches_transformers_from_bytes_and_strings(siglip_tiny_hf, siglip_tiny_weights, photos):
    check_end_to_end(*siglip_tiny_hf, siglip_tiny_weights, SIGLIP_MODEL, {**photos, **transparent_photos(photos)},
                     TEXTS)


def test_siglip2_matches_transformers_from_bytes_and_strings(siglip2_tiny_hf, siglip2_tiny_weights, photos):
    check_end_to_end(*siglip2_tiny_hf, siglip2_tiny_weights, SIGLIP2_MODEL, {**photos, **transparent_photos(photos)},
                     TEXTS)


def test_vectors_are_raw_features_as_weaviates_container_returns(siglip, siglip_tiny_weights):
    raw = siglip.embed_texts(["a photo of a dog"])
    assert not siglip.normalize and "not normalized" in siglip.describe_output()
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3
    unit = handspring_models.load(SIGLIP_MODEL, weights_dir=siglip_tiny_weights, normalize=True)
    np.testing.assert_allclose(unit.embed_texts(["a photo of a dog"]), raw / np.linalg.norm(raw), rtol=1e-5)


def test_a_text_vector_is_the_same_alone_and_in_any_batch(siglip):
    together = siglip.embed_texts(TEXTS)
    alone = np.concatenate([siglip.embed_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-5)
    reordered = siglip.embed_texts(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(reordered, together, rtol=1e-5, atol=1e-5)


def test_an_image_vector_is_the_same_alone_and_in_a_batch(siglip, photos):
    images = list(photos.values())
    alone = np.concatenate([siglip.embed_images([image]) for image in images])
    np.testing.assert_allclose(alone, siglip.embed_images(images), rtol=1e-5, atol=1e-5)


def test_every_text_is_64_tokens(siglip):
    for text in ("", "a dog", " ".join(["word"] * 500)):
        assert siglip.prepare("text", text).shape == (64,)
    assert siglip.prepared_nbytes("text") == 64 * 8


@pytest.mark.parametrize("name", ["google/siglip-so400m-patch14-384", "siglip_so400m_patch14_384_text"])
def test_aliases_and_features_load(siglip_tiny_weights, name):
    model = handspring_models.load(name, weights_dir=siglip_tiny_weights)
    assert model.model_name == SIGLIP_MODEL


def test_weaviate_tags_name_the_siglip_models():
    for tag, name in [("google-siglip-so400m-patch16-256-i18n", "siglip_so400m_patch16_256_i18n"),
                      ("google-siglip2-so400m-patch16-384", "siglip2_so400m_patch16_384"),
                      ("google-siglip2-so400m-patch16-512", "siglip2_so400m_patch16_512")]:
        spec = handspring_models.find_model(tag)
        assert spec.name == name and spec.license == "Apache-2.0" and spec.normalize is False


def test_folder_is_split_per_tower_and_keeps_the_loss_scalars(siglip_tiny_weights):
    config = json.loads((siglip_tiny_weights / "config.json").read_text())
    assert config["components"] == {"image": "image.safetensors", "text": "text.safetensors"}
    assert config["license"] == "Apache-2.0" and config["family"] == "siglip"
    for component, prefix in (("image", "vision_model."), ("text", "text_model.")):
        with safe_open(siglip_tiny_weights / f"{component}.safetensors", "pt") as f:
            keys = set(f.keys())
        assert {"logit_scale", "logit_bias"} <= keys
        assert all(k.startswith(prefix) for k in keys - {"logit_scale", "logit_bias"})


def test_one_tower_alone_loads_only_its_file_and_reports_the_scalars(siglip_tiny_weights):
    text = handspring_models.load(f"{SIGLIP_MODEL}_text", weights_dir=siglip_tiny_weights)
    assert text.model.vision_model is None
    assert text.meta_extra()["sigmoid"] == {"logit_scale": pytest.approx(2.3), "logit_bias": pytest.approx(-9.5),
                                            "match_probability": text.meta_extra()["sigmoid"]["match_probability"]}
    with pytest.raises(handspring_models.MissingModalityError):
        text.embed_images([])


def test_bad_inputs_are_invalid_input_errors(siglip):
    with pytest.raises(handspring_models.InvalidInputError):
        siglip.prepare("text", b"bytes")
    with pytest.raises(handspring_models.InvalidInputError):
        siglip.prepare("image", b"not an image")


def test_bf16_is_close_to_fp32(siglip_tiny_weights, photos):
    fp32 = handspring_models.load(SIGLIP_MODEL, weights_dir=siglip_tiny_weights, precision="fp32", normalize=True)
    bf16 = handspring_models.load(SIGLIP_MODEL, weights_dir=siglip_tiny_weights, precision="bf16", normalize=True)
    for modality, items in (("text", TEXTS[:4]), ("image", [photos["astronaut_rgb"]])):
        cosine = (fp32.embed(modality, items) * bf16.embed(modality, items)).sum(-1)
        assert cosine.min() > 0.98, (modality, cosine)


def test_convert_refuses_another_familys_preprocessing(siglip_tiny_hf, tmp_path):
    with pytest.raises(AssertionError):  # the command line exits 1, saying why
        convert(siglip_tiny_hf[1], SIGLIP2_MODEL, tmp_path / "out")
    from handspring_models.weights import convert as convert_folder

    with pytest.raises(WeightsError, match="bilinear"):
        convert_folder(siglip_tiny_hf[1], SIGLIP2_MODEL, tmp_path / "out")


def test_convert_names_a_missing_tokenizer_file(siglip2_tiny_hf, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(siglip2_tiny_hf[1], src)
    (src / "tokenizer.json").unlink()
    from handspring_models.weights import convert as convert_folder

    with pytest.raises(WeightsError, match="tokenizer.json"):
        convert_folder(src, SIGLIP2_MODEL, tmp_path / "out")


def test_convert_refuses_a_naflex_checkpoint(siglip2_tiny_hf, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(siglip2_tiny_hf[1], src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "model_type": "siglip2"}))
    from handspring_models.weights import convert as convert_folder

    with pytest.raises(WeightsError, match="NaFlex"):
        convert_folder(src, SIGLIP2_MODEL, tmp_path / "out")


def test_random_weights_load_and_embed(tmp_path):
    from handspring_models.siglip import SiglipConfig
    from handspring_models.siglip.model import TextConfig, VisionConfig
    from handspring_models.weights import random_weights

    tiny = SiglipConfig(vision=VisionConfig(32, 16, 32, 1, 2, 64), text=TextConfig(64, 600, 32, 1, 2, 64, 32))
    for model in (SIGLIP_MODEL, SIGLIP2_MODEL):
        random_weights(model, tmp_path / model, architecture=tiny)
        loaded = handspring_models.load(model, weights_dir=tmp_path / model)
        assert loaded.source.startswith("random")
        assert loaded.embed_texts(["a dog"]).shape == loaded.embed_images([encode_blank()]).shape == (1, 32)


def encode_blank() -> bytes:
    from PIL import Image

    return encode(Image.new("RGB", (40, 30), (10, 200, 30)), "JPEG")


@pytest.mark.slow
def test_so400m_384_end_to_end_matches_transformers(siglip_so400m_hf, tmp_path, photos):
    weights = convert(siglip_so400m_hf[1], SIGLIP_MODEL, tmp_path / "weights")
    images = {n: photos[n] for n in ("coffee_640x427", "camera_L")}
    check_end_to_end(*siglip_so400m_hf, weights, SIGLIP_MODEL, images, TEXTS[:6])


@pytest.mark.slow
def test_siglip2_base_224_end_to_end_matches_transformers(siglip2_base_hf, tmp_path, photos):
    weights = convert(siglip2_base_hf[1], SIGLIP2_MODEL, tmp_path / "weights")
    images = {n: photos[n] for n in ("chelsea_rgb_451x300", "astronaut_P", "chelsea_rgba")}
    check_end_to_end(*siglip2_base_hf, weights, SIGLIP2_MODEL, images, TEXTS[:8])


def test_download_converts_the_hub_snapshot(siglip2_tiny_hf, tmp_path):
    """`download` fetches the entry's files from the Hub and converts them: here from a Hub cache
    filled beforehand, offline (no real weights can be fetched in tests)."""
    import os
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    spec = handspring_models.find_model(SIGLIP2_MODEL)
    repo = tmp_path / "hf" / "hub" / f"models--{spec.source.repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in spec.source.files:
        shutil.copy(siglip2_tiny_hf[1] / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "handspring_models.weights", "download", spec.source.repo_id,
                          "--out", str(tmp_path / "out")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["source"] == f"huggingface:{spec.source.repo_id}@{'0' * 40}"
    assert handspring_models.load(SIGLIP2_MODEL, weights_dir=tmp_path / "out").embed_texts(["a"]).shape == (1, 32)


def test_convert_takes_a_folder_with_only_the_required_files(siglip_tiny_hf, tmp_path):
    """Without preprocessor_config.json (the entry's recipe then) and tokenizer_config.json
    (transformers' SiglipTokenizer defaults then): the same vectors."""
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    for name in ("config.json", "model.safetensors", "spiece.model"):
        shutil.copy(siglip_tiny_hf[1] / name, src / name)
    out = convert(src, SIGLIP_MODEL, tmp_path / "out")
    full = convert(siglip_tiny_hf[1], SIGLIP_MODEL, tmp_path / "full")
    a, b = (handspring_models.load(SIGLIP_MODEL, weights_dir=d) for d in (out, full))
    np.testing.assert_array_equal(a.embed_texts(TEXTS[:5]), b.embed_texts(TEXTS[:5]))
