"""Our SigLIP preprocessing gives transformers' ``SiglipImageProcessor`` pixels (its PIL backend:
torchvision does not load beside our torch), on real photos of several sizes and modes, for
SigLIP's bicubic and SigLIP 2's bilinear config."""

import numpy as np
import pytest
from PIL import Image

from handspring_models.inputs.image import ImageRecipe
from handspring_models.siglip.images import preprocess


def recipe(size: int, resample: str = "bicubic") -> ImageRecipe:
    return ImageRecipe(size, resize="squash", resample=resample, mean=(0.5,) * 3, std=(0.5,) * 3)


def transparent_photos(photos) -> dict:
    rgba = photos["chelsea_rgba"].copy()
    alpha = np.zeros(rgba.size[::-1], dtype=np.uint8)
    alpha[:, : rgba.size[0] // 2] = 255  # left half opaque, right half fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    p = photos["astronaut_rgb"].convert("P")
    p.info["transparency"] = 0  # palette entry 0 transparent
    return {"rgba_half_transparent": rgba, "p_with_transparency": p,
            "la": photos["camera_L"].convert("LA")}


def reference_pixels(folder, image: Image.Image) -> np.ndarray:
    from transformers import SiglipImageProcessorPil
    from transformers.image_transforms import convert_to_rgb

    processor = SiglipImageProcessorPil.from_pretrained(folder)
    if not processor.do_convert_rgb:  # SigLIP 2's published config: transformers would fail on non-RGB
        image = convert_to_rgb(image, return_numpy=False)
    return processor(images=[image], return_tensors="np")["pixel_values"][0]


@pytest.mark.parametrize("model", ["siglip", "siglip2"])
def test_pixels_equal_siglip_image_processor(model, siglip_tiny_hf, siglip2_tiny_hf, photos):
    hf_model, folder = siglip_tiny_hf if model == "siglip" else siglip2_tiny_hf
    size = hf_model.config.vision_config.image_size
    resample = "bicubic" if model == "siglip" else "bilinear"
    for name, image in {**photos, **transparent_photos(photos)}.items():
        got = preprocess(image, recipe(size, resample)).numpy()
        assert got.shape == (3, size, size), name
        np.testing.assert_allclose(got, reference_pixels(folder, image), atol=1e-6, err_msg=name)


def test_transparency_is_composited_onto_white(photos):
    image = transparent_photos(photos)["rgba_half_transparent"]
    pixels = preprocess(image, recipe(64)).numpy()
    assert np.all(pixels[:, :, -16:] == 1.0)  # white, normalized: (1 - 0.5) / 0.5


def test_squash_keeps_the_whole_image(photos):
    """No crop: a wide image's left and right edges still reach the output."""
    wide = Image.new("RGB", (400, 100), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 40, 100))
    pixels = preprocess(wide, recipe(32, "bilinear")).numpy()
    assert pixels[:, :, 0].min() == 1.0 and pixels[:, :, -1].max() == -1.0
