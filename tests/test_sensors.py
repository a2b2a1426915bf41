"""Depth, thermal and IMU preprocessing: Weaviate multi2vec-bind's pixel pipeline (checked against a
hand-written reference), full 16-bit scale, and IMU rows transposed (not reshaped) into channels."""

import io

import numpy as np
import pytest
from PIL import Image

from handspring_models.inputs.image import InvalidInputError
from handspring_models.inputs.sensors import MAX_IMU_BYTES, preprocess_depth, preprocess_imu, preprocess_thermal
from tests.conftest import encode

MEAN, STD = np.float32(0.48145466), np.float32(0.26862954)  # Weaviate's numbers, written out
HEADER = "gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z"
ONE_LEVEL = 1 / 255 / 0.26862954  # one 8-bit grey level after normalisation

# (width, height) -> torchvision's Resize(224) size and CenterCrop(224) offsets, worked out by hand:
# short side 224, long side int(224 * long / short), offset round((side - 224) / 2).
GEOMETRY = {
    (300, 200): ((336, 224), (56, 0)),
    (200, 300): ((224, 336), (0, 56)),
    (640, 427): ((335, 224), (56, 0)),  # 223.737 -> 335; offset 55.5 rounds to 56
    (2, 7): ((224, 784), (0, 280)),
    (3, 2): ((336, 224), (56, 0)),
    (1, 1): ((224, 224), (0, 0)),
    (224, 224): ((224, 224), (0, 0)),
}


def levels(size, high, seed=0):
    """A smooth gradient plus noise, as an integer array [height, width] in [0, high]."""
    width, height = size
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.linspace(0, 0.6, height), np.linspace(0, 0.3, width))
    return np.clip((ramp + 0.1 * rng.random((height, width))) * high, 0, high).round()


def reference(image: Image.Image, scale: float) -> np.ndarray:
    """The Weaviate pipeline done by hand on an L or I;16 image: PIL bicubic resize, crop, /scale, normalise."""
    resized_size, (left, top) = GEOMETRY[image.size]
    pixels = np.asarray(image.resize(resized_size, Image.BICUBIC), dtype=np.float32)
    crop = pixels[top : top + 224, left : left + 224] / np.float32(scale)
    return ((crop - MEAN) / STD)[None]


def csv_bytes(rows, header=HEADER, newline="\n") -> bytes:
    lines = ([header] if header is not None else []) + [",".join(str(v) for v in row) for row in rows]
    return (newline.join(lines) + newline).encode()


def ramps(n):
    """Column c holds 1000 * c + t at sample t: every value says which channel and time it came from."""
    return [[1000 * c + t for c in range(6)] for t in range(n)]


# ------------------------------------------------------------------------------- depth and thermal

@pytest.mark.parametrize("size", list(GEOMETRY))
def test_8bit_grey_equals_reference(size):
    image = Image.fromarray(levels(size, 255).astype(np.uint8))
    ours = preprocess_depth(encode(image)).numpy()
    np.testing.assert_array_equal(ours, reference(image, 255))


@pytest.mark.parametrize("size", list(GEOMETRY))
def test_16bit_png_keeps_full_scale(size):
    image = Image.fromarray(levels(size, 65535).astype(np.uint16))
    data = encode(image)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    np.testing.assert_array_equal(preprocess_depth(data).numpy(), reference(image, 65535))


def test_16bit_values_above_255_are_not_clipped():
    """Weaviate's convert("L") would make this all white (1.0); we read 40000 / 65535."""
    image = Image.fromarray(np.full((50, 80), 40000, dtype=np.uint16))
    out = preprocess_depth(encode(image)).numpy()
    np.testing.assert_allclose(out, (40000 / 65535 - MEAN) / STD, rtol=0, atol=1e-6)
    assert out.max() < (1 - MEAN) / STD - 1


@pytest.mark.parametrize("size", [(300, 200), (37, 53)])
def test_8bit_widened_to_16bit_embeds_alike(size):
    eight = levels(size, 255).astype(np.uint8)
    sixteen = eight.astype(np.uint16) * 257
    a = preprocess_depth(encode(Image.fromarray(eight))).numpy()
    b = preprocess_depth(encode(Image.fromarray(sixteen))).numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=1.1 * ONE_LEVEL)


def test_16bit_big_endian_tiff_reads_values():
    big = Image.frombytes("I;16B", (224, 224), np.full((224, 224), 1234, dtype=">u2").tobytes())
    out = preprocess_depth(encode(big, "TIFF")).numpy()
    np.testing.assert_allclose(out, (1234 / 65535 - MEAN) / STD, rtol=0, atol=1e-6)


def test_32bit_integer_image_is_clipped_to_16bit_range():
    values = np.tile(np.array([-5, 0, 30000, 65535, 70000], dtype=np.int32), (224, 45))[:, :224]
    image = Image.fromarray(values)
    assert image.mode == "I"
    out = preprocess_depth(encode(image, "TIFF")).numpy()[0]
    expected = (np.clip(values, 0, 65535) / np.float32(65535) - MEAN) / STD  # 224x224: no resampling
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_float_image_is_refused():
    image = Image.fromarray(np.full((30, 30), 0.5, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="float"):
        preprocess_depth(encode(image, "TIFF"))


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (1, 1)])
def test_rgb_is_converted_with_pil_luma(size):
    rgb = np.stack([levels(size, 255, seed) for seed in (1, 2, 3)], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgb)
    np.testing.assert_array_equal(preprocess_thermal(encode(image)).numpy(), reference(image.convert("L"), 255))


def test_pure_red_maps_to_its_luma():
    """ITU-R 601-2: 255 * 0.299 = 76.2 -> grey level 76."""
    image = Image.new("RGB", (40, 30), (255, 0, 0))
    np.testing.assert_allclose(preprocess_thermal(encode(image)).numpy(), (76 / 255 - MEAN) / STD, atol=1e-6)


def test_grey_stored_as_rgb_equals_grey():
    """LLVIP's thermal JPEGs are R = G = B; luma must give back the grey exactly."""
    grey = levels((300, 200), 255).astype(np.uint8)
    as_rgb = Image.fromarray(np.stack([grey] * 3, axis=-1))
    np.testing.assert_array_equal(preprocess_thermal(encode(as_rgb)).numpy(),
                                  preprocess_thermal(encode(Image.fromarray(grey))).numpy())


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_ignored(mode):
    base_mode = mode[:-1]
    channels = len(base_mode)
    colour = np.stack([levels((120, 90), 255, s) for s in range(channels)], axis=-1).astype(np.uint8)
    alpha = levels((120, 90), 255, seed=9).astype(np.uint8)[..., None]
    with_alpha = Image.fromarray(np.concatenate([colour, alpha], axis=-1), mode)
    without = Image.fromarray(colour[..., 0] if channels == 1 else colour, base_mode)
    np.testing.assert_array_equal(preprocess_depth(encode(with_alpha)).numpy(),
                                  preprocess_depth(encode(without)).numpy())


def test_depth_and_thermal_share_the_pipeline():
    data = encode(Image.fromarray(levels((300, 200), 255).astype(np.uint8)))
    np.testing.assert_array_equal(preprocess_depth(data).numpy(), preprocess_thermal(data).numpy())


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("size", [(300, 200), (1, 1), (5000, 3)])
def test_shape_and_dtype(size, dtype):
    image = Image.fromarray(levels(size, np.iinfo(dtype).max).astype(dtype))
    out = preprocess_depth(encode(image))
    assert out.shape == (1, 224, 224) and str(out.dtype) == "torch.float32"


def test_mode_without_grey_conversion_is_refused():
    with pytest.raises(InvalidInputError, match="unsupported image mode LAB"):
        preprocess_depth(encode(Image.new("LAB", (10, 10)), "TIFF"))


def test_jpeg_decodes():
    image = Image.fromarray(levels((320, 256), 255).astype(np.uint8))
    assert preprocess_thermal(encode(image, "JPEG")).shape == (1, 224, 224)


def test_not_an_image_is_refused():
    with pytest.raises(InvalidInputError, match="not an image"):
        preprocess_depth(b"gyro_x,gyro_y\n1,2\n")


def test_pixel_limit_applies():
    data = encode(Image.new("L", (300, 200)))
    with pytest.raises(InvalidInputError, match="over the limit"):
        preprocess_thermal(data, max_pixels=300 * 200 - 1)


# ------------------------------------------------------------------------------------------- IMU

def test_imu_rows_are_csv_columns():
    """Row c must be column c over time. Weaviate's reshape would put sample 0 of gyro y at [0, 1]."""
    out = preprocess_imu(csv_bytes(ramps(2000))).numpy()
    expected = np.array(ramps(2000), dtype=np.float32).T
    np.testing.assert_array_equal(out, expected)
    assert out[0, 1] == 1 and out[1, 0] == 1000


def test_imu_short_recording_is_zero_padded_at_the_end():
    out = preprocess_imu(csv_bytes(ramps(1500))).numpy()
    np.testing.assert_array_equal(out[:, :1500], np.array(ramps(1500), dtype=np.float32).T)
    assert not out[:, 1500:].any()


def test_imu_long_recording_keeps_the_first_2000_samples():
    out = preprocess_imu(csv_bytes(ramps(3072))).numpy()
    np.testing.assert_array_equal(out, np.array(ramps(2000), dtype=np.float32).T)


def test_imu_single_row():
    out = preprocess_imu(csv_bytes([[1, 2, 3, 4, 5, 6]])).numpy()
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3, 4, 5, 6])
    assert not out[:, 1:].any()


def test_imu_shape_and_dtype():
    out = preprocess_imu(csv_bytes(ramps(10)))
    assert out.shape == (6, 2000) and str(out.dtype) == "torch.float32"


def test_imu_values_are_float32_of_the_text():
    row = [0.6957038924358232, 0.9204110284358231, -1e-30, 1.5e38, -3, "+2.5e-3"]
    out = preprocess_imu(csv_bytes([row])).numpy()
    np.testing.assert_array_equal(out[:, 0], np.array([float(v) for v in row], dtype=np.float32))


def test_imu_numeric_header_is_still_a_header():
    """pandas writes "0,1,2,3,4,5" as the header of an unnamed frame."""
    out = preprocess_imu(csv_bytes([[7] * 6], header="0,1,2,3,4,5")).numpy()
    np.testing.assert_array_equal(out[:, 0], [7] * 6)
    assert not out[:, 1:].any()


def test_imu_tolerates_whitespace_crlf_blank_lines_and_bom():
    text = "\ufeff\r\n" + HEADER + "\r\n 1 , 2,3\t,4,5 ,6 \r\n\r\n7,8,9,10,11,12\r\n\r\n"
    out = preprocess_imu(text.encode()).numpy()
    np.testing.assert_array_equal(out[:, :2], [[1, 7], [2, 8], [3, 9], [4, 10], [5, 11], [6, 12]])
    assert not out[:, 2:].any()


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b" \n\n\t\n", "empty"),
    (HEADER.encode() + b"\n", "no data rows"),
    (b"\xff\xfe\x00g\x00y", "not UTF-8"),
])
def test_imu_empty_or_not_text(data, message):
    with pytest.raises(InvalidInputError, match=message):
        preprocess_imu(data)


@pytest.mark.parametrize("bad_row, match", [
    ("1,2,3,4,5", r"line 3: expected 6 .* got 5"),
    ("0.0,1,2,3,4,5,6", r"line 3: expected 6 .* no timestamp.* got 7"),
    ("1,2,3,4,5,6,", r"line 3: expected 6 .* got 7"),
    ("1;2;3;4;5;6", r"line 3: expected 6 .* got 1"),
    ("1,2,abc,4,5,6", r"line 3, column 3: 'abc' is not a number"),
    ("1,2,3,4,,6", r"line 3, column 5: '' is not a number"),
    ('"1",2,3,4,5,6', r"line 3, column 1: '\"1\"' is not a number"),
    ("1,2,3,nan,5,6", r"line 3, column 4: value is not finite \(nan\)"),
    ("1,2,3,4,-inf,6", r"line 3, column 5: value is not finite \(-inf\)"),
    ("1,2,3,4,5,1e39", r"line 3, column 6: value is out of float32 range"),
])
def test_imu_bad_row_is_named(bad_row, match):
    data = f"{HEADER}\n1,2,3,4,5,6\n{bad_row}\n4,5,6,7,8,9\n".encode()
    with pytest.raises(InvalidInputError, match=match):
        preprocess_imu(data)


def test_imu_line_numbers_count_blank_lines():
    data = f"{HEADER}\n1,2,3,4,5,6\n\n1,2,x,4,5,6\n".encode()
    with pytest.raises(InvalidInputError, match="line 4, column 3"):
        preprocess_imu(data)


def test_imu_bad_row_after_the_window_is_still_refused():
    data = csv_bytes(ramps(2500) + [[1, 2, 3, 4, 5, "oops"]])
    with pytest.raises(InvalidInputError, match="line 2502, column 6"):
        preprocess_imu(data)


def test_imu_long_token_is_shortened_in_the_message():
    with pytest.raises(InvalidInputError) as err:
        preprocess_imu(f"{HEADER}\n1,2,3,4,5,{'z' * 5000}\n".encode())
    assert len(str(err.value)) < 120


def test_imu_row_limit():
    preprocess_imu(csv_bytes(ramps(10)), max_rows=10)
    with pytest.raises(InvalidInputError, match="11 data rows, over the limit of 10"):
        preprocess_imu(csv_bytes(ramps(11)), max_rows=10)


def test_imu_byte_limit_is_checked_before_parsing():
    with pytest.raises(InvalidInputError, match=f"over the limit of {MAX_IMU_BYTES}"):
        preprocess_imu(b"\xff" * (MAX_IMU_BYTES + 1))  # not UTF-8 either: the size is reported first
