"""The Ray Data path (handspring_models.ray) on a local cluster: the vectors equal the
in-process ones, and a bad input is an error row, not a failed job."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

ray = pytest.importorskip("ray")


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((80, 60), Image.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def photo_files(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(10):
        (folder / f"p{i}.jpg").write_bytes(jpeg(i))
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    return folder


def test_files_to_parquet_vectors_equal_in_process(local_ray, photo_files, tmp_path, tiny_weights, tiny_clip):
    from handspring_models.ray import embed_files

    embed_files(str(photo_files), tmp_path / "out", weights_dir=tiny_weights, batch_size=4, concurrency=1)
    table = pads.dataset(tmp_path / "out", format="parquet").to_table()
    rows = {i.rsplit("/", 1)[-1]: (v, e) for i, v, e in zip(table.column("id").to_pylist(),
                                                             table.column("vector").to_pylist(),
                                                             table.column("error").to_pylist())}
    assert len(rows) == 11
    names = [f"p{i}.jpg" for i in range(10)]
    expected = tiny_clip.embed("image", [(photo_files / n).read_bytes() for n in names])
    np.testing.assert_allclose(np.array([rows[n][0] for n in names]), expected, atol=1e-6)


def test_bad_input_is_an_error_row(local_ray, photo_files, tmp_path, tiny_weights):
    from handspring_models.ray import embed_files

    embed_files(str(photo_files), tmp_path / "out", weights_dir=tiny_weights, batch_size=4)
    table = pads.dataset(tmp_path / "out", format="parquet").to_table()
    row = table.column("id").to_pylist().index(str(photo_files / "broken.jpg"))
    assert table.column("vector")[row].as_py() is None
    assert "not an image" in table.column("error")[row].as_py()


def test_texts_in_map_batches(local_ray, tmp_path, tiny_weights, tiny_clip):
    from handspring_models.ray import embed_texts

    texts = ["a photo of a dog", "a cat", "", "x" * 300]
    ds = ray.data.from_items([{"key": str(i), "text": t} for i, t in enumerate(texts)])
    embed_texts(ds, tmp_path / "out", id_column="key", weights_dir=tiny_weights, batch_size=2)
    table = pads.dataset(tmp_path / "out", format="parquet").to_table().sort_by("id")
    np.testing.assert_allclose(np.array(table.column("vector").to_pylist()), tiny_clip.embed("text", texts), atol=1e-6)
