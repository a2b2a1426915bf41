"""What to embed: items enumerated lazily from folders, list files and webdataset shards.

An ``Item`` carries its id, its modality and how to get its raw input (``read``, run in a
decoding thread, so files are read in parallel). Enumeration is cheap and ordered (folders are
walked in sorted order), so it runs twice: once to count (the progress bar's total), once to work.
"""

from __future__ import annotations

import csv
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": IMAGE_SUFFIXES,
    "depth": IMAGE_SUFFIXES,
    "thermal": IMAGE_SUFFIXES,
    "audio": (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"),
    "video": (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v"),
    "imu": (".csv",),
    "text": (".txt",),
}
LIST_SUFFIXES = (".txt", ".csv", ".parquet")


class SourceError(ValueError):
    """An input argument that names nothing usable (the run does not start)."""


@dataclass(frozen=True)
class Item:
    id: str
    modality: str
    read: Callable[[], bytes | str]


def suffix_modalities(modalities: tuple[str, ...]) -> dict[str, str]:
    """File suffix -> the modality it is embedded as, for the modalities in play. An image file
    is an ``image`` where the model embeds images, else ``depth`` or ``thermal`` (whichever is
    loaded); ask for one modality (``--modality``) to choose."""
    table: dict[str, str] = {}
    for modality in ("image", "depth", "thermal", "audio", "video", "imu", "text"):
        if modality in modalities:
            for suffix in SUFFIXES[modality]:
                table.setdefault(suffix, modality)
    return table


def _read_text(path: Path) -> Callable[[], str]:
    return lambda: path.read_bytes().decode("utf-8")


def _read_value(value):
    return lambda: value


def folder_items(root: Path, table: dict[str, str]) -> Iterator[Item]:
    """Every file under ``root`` with a suffix in ``table``, in sorted order; id: the path as given."""
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            entries = sorted(entries, key=lambda e: e.name)
        subfolders = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=True):
                subfolders.append(Path(entry.path))
                continue
            modality = table.get(os.path.splitext(entry.name)[1].lower())
            if modality is None:
                continue
            path = Path(entry.path)
            yield Item(str(path), modality, _read_text(path) if modality == "text" else path.read_bytes)
        stack.extend(reversed(subfolders))


def list_rows(path: Path, column: str | None, id_column: str | None) -> Iterator[tuple[str | None, str]]:
    """(key or None, value) for each row of a .txt (one value a line), .csv or .parquet list."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if column or id_column:
            raise SourceError(f"{path}: a .txt list has one value a line and no columns")
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\r\n")
                if line:
                    yield None, line
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            _check_columns(path, reader.fieldnames or [], column, id_column)
            name = column or reader.fieldnames[0]
            for row in reader:
                yield (row[id_column] if id_column else None), row[name]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
        names = file.schema_arrow.names
        _check_columns(path, names, column, id_column)
        name = column or names[0]
        wanted = [name] + ([id_column] if id_column and id_column != name else [])
        for batch in file.iter_batches(columns=wanted, batch_size=8192):
            values = batch.column(name).to_pylist()
            keys = batch.column(id_column).to_pylist() if id_column else [None] * len(values)
            for key, value in zip(keys, values):
                yield (None if key is None else str(key)), value
    else:
        raise SourceError(f"{path}: a list must be .txt, .csv or .parquet")


def _check_columns(path: Path, names: list[str], column: str | None, id_column: str | None) -> None:
    for wanted in (column, id_column):
        if wanted is not None and wanted not in names:
            raise SourceError(f"{path} has no column {wanted!r} (it has: {', '.join(names)})")
    if column is None and len(names) != 1:
        raise SourceError(f"{path} has {len(names)} columns ({', '.join(names)}): say which with --column")


def list_items(path: Path, column: str | None, id_column: str | None, texts: bool,
               table: dict[str, str]) -> Iterator[Item]:
    """Rows of a list file: texts (``texts``; id: the key column, else the row number) or paths
    (id: the key column, else the path as written; relative paths are taken from the current
    directory). A path with a suffix of no modality in play is skipped."""
    for number, (key, value) in enumerate(list_rows(path, column, id_column)):
        if texts:
            yield Item(key if key is not None else str(number), "text", _read_value(value))
            continue
        if value is None:
            continue
        file = Path(value)
        modality = table.get(file.suffix.lower())
        if modality is None:
            continue
        yield Item(key if key is not None else value, modality,
                   _read_text(file) if modality == "text" else file.read_bytes)


def shard_items(path: Path, table: dict[str, str]) -> Iterator[Item]:
    """Members of a webdataset ``.tar`` shard (img2dataset's layout: ``KEY.jpg``, ``KEY.txt``,
    ``KEY.json``...), those with a suffix in ``table``; id: the sample's key (the member's path up
    to the first dot of its name). The bytes are read here, in order (a tar is read front to back)."""
    try:
        archive = tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as e:
        raise SourceError(f"{path}: not a readable tar shard ({e})") from None
    with archive:
        for member in archive:
            if not member.isfile():
                continue
            folder, _, name = member.name.rpartition("/")
            stem, dot, rest = name.partition(".")
            modality = table.get("." + rest.rsplit(".", 1)[-1].lower()) if dot else None
            if modality is None:
                continue
            key = f"{folder}/{stem}" if folder else stem
            data = archive.extractfile(member).read()
            value = data.decode("utf-8", "replace") if modality == "text" else data
            yield Item(key, modality, _read_value(value))


def shard_keys(path: Path, table: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(modality, key) of each member ``shard_items`` yields, without reading the data (counting)."""
    with tarfile.open(path, "r:") as archive:
        for member in archive:
            folder, _, name = member.name.rpartition("/")
            stem, dot, rest = name.partition(".")
            modality = table.get("." + rest.rsplit(".", 1)[-1].lower()) if dot and member.isfile() else None
            if modality is not None:
                yield modality, (f"{folder}/{stem}" if folder else stem)


@dataclass(frozen=True)
class Sources:
    """The run's inputs: folders, list files and shards, in the order given."""

    inputs: tuple[Path, ...]
    modalities: tuple[str, ...]
    column: str | None = None
    id_column: str | None = None
    texts: bool = False

    def __post_init__(self) -> None:
        for path in self.inputs:
            if not path.exists():
                raise SourceError(f"{path} does not exist")
            if path.is_file() and path.suffix.lower() not in LIST_SUFFIXES + (".tar",):
                raise SourceError(f"{path}: an input is a folder, a .tar shard or a .txt/.csv/.parquet list")
        if self.texts and "text" not in self.modalities:
            raise SourceError("--texts: the loaded feature does not embed text")

    def items(self) -> Iterator[Item]:
        table = suffix_modalities(self.modalities)
        for path in self.inputs:
            if path.is_dir():
                yield from folder_items(path, table)
            elif path.suffix.lower() == ".tar":
                yield from shard_items(path, table)
            else:
                yield from list_items(path, self.column, self.id_column, self.texts, table)

    def keys(self) -> Iterator[tuple[str, str]]:
        """(modality, id) of every item, without reading any input's data."""
        table = suffix_modalities(self.modalities)
        for path in self.inputs:
            if path.suffix.lower() == ".tar" and path.is_file():
                yield from shard_keys(path, table)
            else:
                for item in (folder_items(path, table) if path.is_dir()
                             else list_items(path, self.column, self.id_column, self.texts, table)):
                    yield item.modality, item.id
