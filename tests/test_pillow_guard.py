"""The library leaves Pillow's process-wide decompression-bomb guard alone, and keeps its own limit."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest
from PIL import Image

from handspring_models.inputs.image import InvalidInputError, decode_image, warn_if_pillow_limits
from tests.conftest import REPO, encode
from tests.fuzz.lies import png_claiming

PILLOW_DEFAULT = 1024 * 1024 * 1024 // 4 // 3  # Pillow's own default, 89478485


def test_importing_and_preparing_leaves_pillows_limit_unchanged():
    # A fresh interpreter: in this one the library is long imported.
    script = (
        "import PIL.Image; before = PIL.Image.MAX_IMAGE_PIXELS\n"
        "import handspring_models, handspring_models.inputs.image, handspring_models.inputs.sensors\n"
        "import handspring_models.inputs.audio, handspring_models.inputs.video, handspring_models.imagebind.embedder\n"
        "import io; buf = io.BytesIO(); PIL.Image.new('RGB', (40, 30)).save(buf, 'PNG')\n"
        "handspring_models.inputs.image.preprocess_image(handspring_models.inputs.image.decode_image(buf.getvalue()))\n"
        "handspring_models.inputs.sensors.preprocess_depth(buf.getvalue())\n"
        "print(before, PIL.Image.MAX_IMAGE_PIXELS)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after = out.stdout.split()
    assert before != "None" and after == before


def test_decoding_leaves_pillows_limit_unchanged(photos):
    decode_image(encode(photos["astronaut_rgb"], "PNG"))
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT


def test_our_limit_refuses_from_the_header_below_pillows():
    # 9000 x 9000 = 81 M pixels: under Pillow's 89 M, over our default 64 M.
    with pytest.raises(InvalidInputError, match="9000x9000 = 81000000 pixels, over the limit of 64000000"):
        decode_image(png_claiming(9000, 9000))


def test_past_pillows_hard_limit_is_invalid_input_even_with_a_higher_max_pixels():
    # 20000 x 20000 = 400 M pixels, over twice Pillow's default: Pillow refuses before we look.
    with pytest.raises(InvalidInputError, match="Pillow's decompression-bomb guard"):
        decode_image(png_claiming(20000, 20000), max_pixels=10**9)


def test_pillows_warning_turned_error_is_invalid_input():
    # 10000 x 10000 = 100 M pixels: between Pillow's 1x and 2x, where it warns; an application
    # that makes warnings errors gets a clean refusal, not a RuntimeWarning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(InvalidInputError, match="Pillow's decompression-bomb guard"):
            decode_image(png_claiming(10000, 10000), max_pixels=10**9)


def test_a_limit_the_application_sets_on_pillow_is_respected(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InvalidInputError, match="Pillow's decompression-bomb guard"):
        decode_image(encode(Image.new("L", (30, 30)), "PNG"))


def test_max_pixels_above_pillows_limit_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="handspring_models"):
        warn_if_pillow_limits(PILLOW_DEFAULT + 1)
    assert "PIL.Image.MAX_IMAGE_PIXELS" in caplog.text


def test_max_pixels_within_pillows_limit_is_not_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="handspring_models"):
        warn_if_pillow_limits(PILLOW_DEFAULT)
    assert caplog.text == ""
