"""Preprocessing equals OpenAI CLIP's semantics pixel for pixel; decoding fails cleanly on bad bytes."""

import io

import numpy as np
import pytest
from PIL import Image

from handspring_models.inputs.image import (CLIP_STD, InvalidInputError, crop_offsets, decode_image, preprocess_image,
                                          resized_size)
from tests.conftest import encode, sample_photos


@pytest.fixture(scope="module")
def hf_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor()  # OpenAI's numbers: shortest edge 224, bicubic, crop 224, CLIP mean/std


def reference_pixels(processor, image, size=224):
    """transformers resizes and normalises like OpenAI; its crop floors the offset where OpenAI rounds,
    so take its uncropped output and crop it at OpenAI's offsets."""
    full = processor(images=image, do_center_crop=False, return_tensors="np")["pixel_values"][0]
    _, h, w = full.shape
    left, top = crop_offsets(w, h, size)
    return full[:, top : top + size, left : left + size]


@pytest.mark.parametrize("name", list(sample_photos()))
def test_pixels_equal_reference(hf_processor, photos, name):
    ours = preprocess_image(photos[name]).numpy()
    np.testing.assert_allclose(ours, reference_pixels(hf_processor, photos[name]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(640, 427), (427, 640), (451, 300), (1001, 667), (225, 225), (224, 1000)])
def test_crop_rounds_offset_like_openai(hf_processor, photos, size):
    image = photos["coffee_rgb_600x400"].resize(size, Image.BICUBIC)
    w, h = resized_size(*size, 224)
    left, top = crop_offsets(w, h, 224)
    assert (left, top) == (int(round((w - 224) / 2)), int(round((h - 224) / 2)))
    np.testing.assert_allclose(preprocess_image(image).numpy(), reference_pixels(hf_processor, image), atol=1e-6)


def test_640x427_differs_from_transformers_crop(hf_processor, photos):
    """The known one-pixel disagreement: we follow OpenAI, not CLIPImageProcessor."""
    image = photos["coffee_640x427"]
    theirs = hf_processor(images=image, return_tensors="np")["pixel_values"][0]
    ours = preprocess_image(image).numpy()
    assert not np.allclose(ours, theirs, atol=1e-3)
    np.testing.assert_allclose(ours[:, :, :-1], theirs[:, :, 1:], atol=1e-6)  # shifted by exactly one column


def test_output_shape_and_dtype(photos):
    x = preprocess_image(photos["camera_L"])
    assert x.shape == (3, 224, 224) and str(x.dtype) == "torch.float32"


def test_extreme_aspect_ratio_stays_small_and_close(photos):
    """A 3x5000 strip must not be resized to 224x373k; past 8:1 only the crop window is resampled
    (PIL's box), which stays within 2 grey levels of the full resize on a photo."""
    strip = Image.fromarray(np.random.default_rng(0).integers(0, 255, (5000, 3, 3), dtype=np.uint8))
    assert preprocess_image(strip).shape == (3, 224, 224)
    tall = photos["astronaut_rgb"].resize((200, 2400))
    full = tall.resize(resized_size(*tall.size, 224), Image.BICUBIC)
    left, top = crop_offsets(*full.size, 224)
    expected = preprocess_image(full.crop((left, top, left + 224, top + 224)))
    two_levels = 2 / 255 / min(CLIP_STD) + 1e-6
    np.testing.assert_allclose(preprocess_image(tall).numpy(), expected.numpy(), rtol=0, atol=two_levels)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_decode_formats(photos, fmt):
    image = photos["chelsea_rgb_451x300"]
    decoded = decode_image(encode(image, fmt))
    assert decoded.size == image.size


def test_decode_equals_pil_for_png(photos):
    image = photos["astronaut_rgb"]
    assert np.array_equal(np.asarray(decode_image(encode(image, "PNG"))), np.asarray(image))


def test_jpeg_draft_keeps_at_least_twice_the_target(photos):
    big = photos["astronaut_large_1600x1200"].resize((4000, 3000))
    decoded = decode_image(encode(big, "JPEG", quality=90), draft_size=448)
    assert min(decoded.size) >= 448 and decoded.size[0] < 4000


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "not an image"),
        (b"hello, world", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "image"),
    ],
)
def test_garbage_is_invalid_input(payload, message):
    with pytest.raises(InvalidInputError, match=message):
        decode_image(payload)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_invalid_input(photos, fmt):
    data = encode(photos["astronaut_rgb"], fmt)
    with pytest.raises(InvalidInputError):
        decode_image(data[: len(data) // 2])


def test_pixel_limit_rejects_before_decoding():
    # A real PNG whose header claims 20000x20000: refused from the header, nothing allocated.
    data = encode(Image.new("L", (20000, 20000)), "PNG", optimize=True)
    assert len(data) < 1_000_000
    with pytest.raises(InvalidInputError, match="over the limit"):
        decode_image(data, max_pixels=50_000_000)


def test_pixel_limit_is_configurable(photos):
    data = encode(photos["astronaut_rgb"], "PNG")
    decode_image(data, max_pixels=512 * 512)
    with pytest.raises(InvalidInputError, match="over the limit"):
        decode_image(data, max_pixels=512 * 512 - 1)


def test_any_mode_becomes_rgb():
    for mode in ["1", "L", "LA", "P", "PA", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "LAB", "HSV"]:
        assert preprocess_image(Image.new(mode, (300, 200))).shape == (3, 224, 224)


def test_unsupported_mode_is_invalid_input():
    with pytest.raises(InvalidInputError, match="mode"):
        preprocess_image(Image.new("La", (300, 200)))


def test_animated_gif_uses_first_frame(photos):
    frames = [photos["chelsea_rgb_451x300"], photos["coffee_rgb_600x400"].resize((451, 300))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buf.getvalue())
    assert decoded.size == (451, 300)
