"""Atomic writes: every output file or folder is written under a temporary name and renamed when complete.

A killed run therefore never leaves a half-written file or folder under its final name, and re-running is
safe. Temporaries are named `.NAME.tmp-PID` (`temporary_name`); a run that holds the output folder's lock
(`common.locks.folder_lock`) removes the ones killed runs left (`remove_temporaries`) before it writes NAME.

    with atomic_path(FOLDER / "x.json") as tmp: ...          # one file
    with atomic_folder(FOLDER / "step-0000100") as tmp: ...  # a folder, published whole (`publish_folder`)
`read_json_object` reads a JSON object back, every failure one line naming the file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from json.encoder import encode_basestring as quote
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from common.errors import UserError, first_line


def output_folder(path: Path, option: str = "--out") -> Path:
    """`path` as a folder that exists and can be written, or one UserError line saying why not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{option} {path}: cannot write there (cannot create the folder: {e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: the folder is not writable")
    return path


def output_file(path: Path, option: str = "--out") -> Path:
    """`path` as a file that can be written (its folder created), or one UserError line saying why not."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; expected a file name")
    output_folder(path.parent, option=f"{option} {path}: its folder")
    return path


def temporary_name(path: Path, pid: int | str) -> Path:
    """The temporary sibling `.NAME.tmp-PID` that `atomic_path` writes before renaming."""
    return path.with_name(f".{path.name}.tmp-{pid}")


def remove_temporaries(*paths: Path) -> int:
    """Remove the temporaries (files or folders) of `paths` that killed runs left behind; how many there were.

    A path's name may be a glob pattern (`checkpoints/step-*`: the temporaries of every step folder).
    Each folder is listed once, however many paths lie in it. Call it only while holding the folder's
    lock (`common.locks`): a live writer's temporary looks the same.
    """
    patterns: dict[Path, list[str]] = {}
    for path in map(Path, paths):
        patterns.setdefault(path.parent, []).append(path.name)
    removed = 0
    for folder, names in patterns.items():
        if not folder.is_dir():
            continue
        for entry in list(os.scandir(folder)):
            stem, marker, _ = entry.name[1:].rpartition(".tmp-")
            if entry.name.startswith(".") and marker and any(fnmatch.fnmatchcase(stem, n) for n in names):
                _remove(Path(entry.path))
                removed += 1
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def publish_folder(tmp: Path, final: Path) -> Path:
    """Rename the finished folder `tmp` onto `final`, the one way a folder is published.

    An older `final` is first renamed to a temporary (`.NAME.tmp-PID-old`) and deleted only once the new
    folder is in place: a kill leaves the old or the new folder complete, or (between the two renames)
    the old one under that temporary name; never a mix. `remove_temporaries(final)` clears what is left.
    """
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        aside = temporary_name(final, f"{os.getpid()}-old")
        os.replace(final, aside)
        os.replace(tmp, final)
        shutil.rmtree(aside)
    else:
        os.replace(tmp, final)
    return final


@contextlib.contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of `final`; publish it onto `final` only if the block succeeds.

    The temporaries of `final` that killed runs left are removed first, so hold the lock of its parent
    (`common.locks.folder_lock`, or `whole=True` where `final` is the output folder itself).
    """
    final = Path(final)
    remove_temporaries(final)
    tmp = temporary_name(final, os.getpid())
    tmp.mkdir(parents=True)
    try:
        yield tmp
        publish_folder(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, os.getpid())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


STATISTICS_COLUMNS = ["dataset", "image_id", "split", "kind"]  # min/max of long texts cost time and help no reader


def write_parquet(table: pa.Table, path: Path, row_group_size: int = 256 * 1024) -> None:
    """The one Parquet writer: zstd, fixed row groups, no per-run metadata (byte-identical reruns)."""
    statistics = [c for c in STATISTICS_COLUMNS if c in table.column_names]
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size, write_statistics=statistics)


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file (the named columns, all by default). `pq.ParquetFile` rather than `pq.read_table`,
    which builds a dataset for one file and imports pyarrow.dataset and pandas: 0.2 s of every command's start."""
    with pq.ParquetFile(path) as file:
        return file.read(columns=columns)


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json_object(path: Path, what: str, missing: str | None = None, hint: str = "") -> dict:
    """The JSON object in `path`; missing, unreadable (`hint` follows) or not an object is one UserError line."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: {missing or what + ' not found'}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable {what} ({first_line(e)}){hint}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: {what}: expected a JSON object, got {type(value).__name__}{hint}")
    return value


def write_jsonl(rows: Iterable[dict], path: Path) -> None:
    """One JSON object per line, exactly as json.dumps(row, ensure_ascii=False) writes it."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(_json_line(row) for row in rows)


def _json_line(row: dict) -> str:
    # rejects are flat string records by the hundred thousand: quoting strings with the C escaper
    # is ~5x faster than json.dumps per row, and gives the same text
    fields = (
        f"{quote(key)}: {quote(value) if type(value) is str else json.dumps(value, ensure_ascii=False)}"
        for key, value in row.items()
    )
    return "{" + ", ".join(fields) + "}\n"
