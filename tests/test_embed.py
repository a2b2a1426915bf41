"""Bulk embedding into Parquet (handspring_models.embed): inputs, output, errors, resume after a
real SIGKILL, progress and the Weaviate import."""

from __future__ import annotations

import csv
import io
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

from handspring_models import embed
from handspring_models.embed.dataset import OutputError, PartWriter, Rows

REPO = Path(__file__).resolve().parent.parent


def jpeg(seed: int, size=(96, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize(size, Image.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """12 JPEGs in two subfolders, a broken one, a truncated one and a file of another type."""
    root = tmp_path / "photos"
    for i in range(12):
        folder = root / f"sub{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"p{i:02d}.jpg").write_bytes(jpeg(i))
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "truncated.png").write_bytes(jpeg(99)[:40])
    (root / "readme.md").write_text("not an input")
    return root


def read(out: Path):
    return pads.dataset(out, format="parquet").to_table()


def by_id(table) -> dict:
    return {i: (v, e) for i, v, e in zip(table.column("id").to_pylist(), table.column("vector").to_pylist(),
                                         table.column("error").to_pylist())}


def test_folder_rows_match_in_process_vectors(photo_folder, tmp_path, tiny_clip):
    summary = embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip, batch_size=4, workers=2)
    rows = by_id(read(tmp_path / "out"))
    photos = sorted(photo_folder.rglob("p*.jpg"))
    assert len(rows) == 14 and summary.embedded == 12 and summary.errors == 2
    expected = tiny_clip.embed("image", [p.read_bytes() for p in photos])
    got = np.array([rows[str(p)][0] for p in photos], np.float32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_bad_files_become_error_rows(photo_folder, tmp_path, tiny_clip):
    embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip, batch_size=4)
    rows = by_id(read(tmp_path / "out"))
    for name in ("broken.jpg", "truncated.png"):
        vector, error = rows[str(photo_folder / name)]
        assert vector is None and error


def test_file_metadata_names_model_precision_weights_and_convention(photo_folder, tmp_path, tiny_clip):
    embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip)
    meta = embed.describe(tmp_path / "out")["metadata"]
    assert meta["model"] == "clip_vit_b_32" and meta["precision"] == "fp32"
    assert meta["weights_manifest_sha256"] == tiny_clip.manifest_sha256
    assert meta["output_convention"] == tiny_clip.describe_output()
    assert pq.read_schema(embed.describe(tmp_path / "out")["paths"][0]).field("vector").type.list_size == tiny_clip.dim


def test_text_list_csv_ids_from_column(tmp_path, tiny_clip):
    listing = tmp_path / "captions.csv"
    with open(listing, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "caption"])
        writer.writerows([["a", "a photo of a dog"], ["b", "a cat"], ["c", "x" * 500]])
    embed.run([listing], tmp_path / "out", embedder=tiny_clip, column="caption", id_column="key", texts=True)
    rows = by_id(read(tmp_path / "out"))
    expected = tiny_clip.embed("text", ["a photo of a dog", "a cat", "x" * 500])
    np.testing.assert_allclose(np.array([rows[k][0] for k in "abc"]), expected, atol=1e-6)


def test_parquet_list_of_paths(photo_folder, tmp_path, tiny_clip):
    import pyarrow as pa

    paths = [str(p) for p in sorted(photo_folder.rglob("*.jpg"))] + [str(tmp_path / "gone.jpg")]
    pq.write_table(pa.table({"path": paths, "n": list(range(len(paths)))}), tmp_path / "list.parquet")
    embed.run([tmp_path / "list.parquet"], tmp_path / "out", embedder=tiny_clip, column="path")
    rows = by_id(read(tmp_path / "out"))
    assert set(rows) == set(paths)
    assert "cannot read" in rows[str(tmp_path / "gone.jpg")][1]


def test_list_with_several_columns_needs_column(tmp_path, tiny_clip):
    listing = tmp_path / "list.csv"
    listing.write_text("a,b\n1,2\n")
    with pytest.raises(embed.SourceError, match="--column"):
        embed.run([listing], tmp_path / "out", embedder=tiny_clip, texts=True)


def test_webdataset_shard_ids_are_sample_keys(tmp_path, tiny_clip):
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(3):
            for suffix, data in ((".jpg", jpeg(i)), (".txt", f"caption {i}".encode()), (".json", b"{}")):
                info = tarfile.TarInfo(f"00000{i:04d}{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    embed.run([shard], tmp_path / "out", embedder=tiny_clip, modalities=["image"])
    rows = by_id(read(tmp_path / "out"))
    assert sorted(rows) == ["000000000", "000000001", "000000002"]
    np.testing.assert_allclose(rows["000000001"][0], tiny_clip.embed("image", [jpeg(1)])[0], atol=1e-6)


def test_second_run_skips_what_is_written(photo_folder, tmp_path, tiny_clip):
    embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip)
    again = embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip)
    assert again.embedded == 0 and again.errors == 0 and again.skipped == 14
    assert read(tmp_path / "out").num_rows == 14


def test_new_files_are_added_on_rerun(photo_folder, tmp_path, tiny_clip):
    embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip)
    (photo_folder / "new.jpg").write_bytes(jpeg(50))
    again = embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip)
    assert again.embedded == 1 and read(tmp_path / "out").num_rows == 15


def test_output_of_other_weights_is_refused(photo_folder, tmp_path, tiny_clip):
    out = tmp_path / "out"
    embed.run([photo_folder], out, embedder=tiny_clip)
    metadata = dict(embed.describe(out)["metadata"], weights_manifest_sha256="other")
    with pytest.raises(OutputError, match="another model"):
        PartWriter(out, tiny_clip.dim, metadata)


def test_a_second_writer_on_one_output_is_refused(tmp_path):
    first = PartWriter(tmp_path / "out", 4, {"model": "m"})
    try:
        with pytest.raises(OutputError, match="another run"):
            PartWriter(tmp_path / "out", 4, {"model": "m"})
    finally:
        first.close()


def test_unpublished_part_is_invisible_to_readers(tmp_path):
    writer = PartWriter(tmp_path / "out", 2, {"model": "m"}, row_group_rows=1)
    writer.add(Rows(["a"], ["text"], np.ones((1, 2), np.float32), [None]))
    writer.publish()
    writer.add(Rows(["b"], ["text"], np.ones((1, 2), np.float32), [None]))  # a row group, unpublished
    assert list((tmp_path / "out").glob(".part-*.tmp"))
    assert read(tmp_path / "out").column("id").to_pylist() == ["a"]
    writer.close(publish=False)


# ---------------------------------------------------------------- the command, in a subprocess


def embed_command(out: Path, *inputs: Path, weights: Path, extra=()) -> list[str]:
    return [sys.executable, "-m", "handspring_models.embed", *map(str, inputs), "--out", str(out),
            "--weights", str(weights), "--precision", "fp32", *extra]


def test_sigkill_midway_then_resume_gives_complete_duplicate_free_output(tmp_path, tiny_weights, tiny_clip):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(400):
        (root / f"p{i:04d}.jpg").write_bytes(jpeg(i, size=(64, 48)))
    (root / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    out = tmp_path / "out"
    # Small parts so the kill lands after some are published and with one under way.
    command = embed_command(out, root, weights=tiny_weights,
                            extra=["--batch-size", "8", "--row-group-rows", "8", "--rows-per-part", "48", "-v"])
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        published = 0
        for line in process.stderr:  # the event: parts published (logged with -v)
            published += "published" in line
            if published == 2:
                break
        assert published == 2, "the run ended before publishing two parts"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    killed_rows = read(out).num_rows  # a reader sees a complete dataset right after the kill
    assert 0 < killed_rows < 401

    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    table = read(out)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 401
    assert f"{killed_rows} already done" in done.stdout
    rows = by_id(table)
    sample = sorted(root.glob("p*.jpg"))[::37]
    expected = tiny_clip.embed("image", [p.read_bytes() for p in sample])
    np.testing.assert_allclose(np.array([rows[str(p)][0] for p in sample]), expected, atol=1e-6)
    assert rows[str(root / "broken.jpg")][1]


def test_no_progress_bar_off_a_terminal_but_a_summary_line(photo_folder, tmp_path, tiny_weights):
    done = subprocess.run(embed_command(tmp_path / "out", photo_folder, weights=tiny_weights),
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("done: 12 embedded, 2 errors, 0 already done")


def test_progress_bar_when_asked(photo_folder, tmp_path, tiny_clip, capsys):
    embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip, progress=True)
    assert "14/14" in capsys.readouterr().err


def test_bad_argument_is_a_clear_error(tmp_path, tiny_weights, capsys):
    assert embed.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--weights", str(tiny_weights)]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------- --weaviate (a recording stand-in)


class RecordingBatch:
    """Stands in for weaviate-client v4's ``collection.batch``: records what the sink calls (no
    Weaviate runs here); ``refuse`` names source ids whose objects come back as failed."""

    def __init__(self, refuse=()):
        self.objects: list[dict] = []
        self.flushed_at: list[int] = []  # how many objects had been added at each flush
        self.failed_objects: list = []
        self.refuse = set(refuse)
        self.entered = self.exited = 0

    def fixed_size(self, batch_size, concurrent_requests):
        return self

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc):
        self.exited += 1

    def add_object(self, properties, vector, uuid):
        self.objects.append({"properties": properties, "vector": vector, "uuid": str(uuid)})
        if properties["source_id"] in self.refuse:
            from types import SimpleNamespace

            self.failed_objects.append(SimpleNamespace(message="refused", object_=SimpleNamespace(properties=properties)))

    def flush(self):
        self.flushed_at.append(len(self.objects))


class RecordingCollection:
    def __init__(self, refuse=()):
        self.batch = RecordingBatch(refuse)


def test_weaviate_gets_every_embedded_row_with_its_vector(photo_folder, tmp_path, tiny_clip):
    collection = RecordingCollection()
    summary = embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip, weaviate_collection=collection)
    objects = {o["properties"]["source_id"]: o for o in collection.batch.objects}
    rows = by_id(read(tmp_path / "out"))
    assert set(objects) == {i for i, (_, error) in rows.items() if error is None}  # no error rows
    for item_id, obj in objects.items():
        np.testing.assert_allclose(obj["vector"], rows[item_id][0], atol=0)
        assert obj["properties"]["modality"] == "image"
    assert summary.weaviate_sent == 12 and collection.batch.exited == 1


def test_weaviate_batch_is_flushed_before_each_part_is_published(photo_folder, tmp_path, tiny_clip):
    collection = RecordingCollection()
    embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip, weaviate_collection=collection, batch_size=4,
              row_group_rows=4, rows_per_part=4)
    parts = embed.describe(tmp_path / "out")["paths"]
    written = np.cumsum([pq.read_table(p).column("error").null_count for p in parts]).tolist()
    assert collection.batch.flushed_at == written  # every published vector had been handed over


def test_weaviate_uuids_are_stable_so_a_reimport_overwrites(photo_folder, tmp_path, tiny_clip):
    first, second = RecordingCollection(), RecordingCollection()
    embed.run([photo_folder], tmp_path / "a", embedder=tiny_clip, weaviate_collection=first)
    embed.run([photo_folder], tmp_path / "b", embedder=tiny_clip, weaviate_collection=second)
    assert sorted(o["uuid"] for o in first.batch.objects) == sorted(o["uuid"] for o in second.batch.objects)
    assert len({o["uuid"] for o in first.batch.objects}) == 12


def test_objects_weaviate_refuses_are_counted(photo_folder, tmp_path, tiny_clip):
    refused = str(sorted(photo_folder.rglob("p*.jpg"))[0])
    collection = RecordingCollection(refuse=[refused])
    summary = embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip, weaviate_collection=collection)
    assert summary.weaviate_failed == 1 and "1 refused" in summary.line()


def test_normalize_other_than_the_loaded_embedder_is_refused(photo_folder, tmp_path, tiny_clip):
    with pytest.raises(ValueError, match="normalize"):
        embed.run([photo_folder], tmp_path / "out", embedder=tiny_clip, normalize=not tiny_clip.normalize)


def test_mixed_folder_each_file_by_its_modality(tmp_path, imagebind_tiny_weights):
    """A folder of images, audio, video, IMU CSVs and texts (and a broken WAV) through ImageBind:
    each file embedded as its modality, in batches per modality, equal to the in-process vectors."""
    import handspring_models
    from tests import media

    bind = handspring_models.load("imagebind_huge", imagebind_tiny_weights, precision="fp32")
    root = tmp_path / "mixed"
    root.mkdir()
    files = {"a.jpg": ("image", jpeg(1)), "b.jpg": ("image", jpeg(2)), "c.wav": ("audio", media.wav(1.0)),
             "d.mp4": ("video", media.video()), "e.csv": ("imu", media.imu_csv()),
             "f.txt": ("text", b"a dog barking")}
    for name, (_, data) in files.items():
        (root / name).write_bytes(data)
    (root / "broken.wav").write_bytes(b"RIFF nonsense")
    embed.run([root], tmp_path / "out", embedder=bind, batch_size=2)
    table = read(tmp_path / "out")
    rows = {i: (m, v, e) for i, m, v, e in zip(*(table.column(c).to_pylist() for c in ("id", "modality", "vector", "error")))}
    assert len(rows) == 7 and rows[str(root / "broken.wav")][1] is None and rows[str(root / "broken.wav")][2]
    for name, (modality, data) in files.items():
        got_modality, vector, error = rows[str(root / name)]
        assert got_modality == modality and error is None
        item = data.decode() if modality == "text" else data
        np.testing.assert_allclose(vector, bind.embed(modality, [item])[0], atol=1e-5)
