"""The converted layout, written and read here only: `OUT/NAME.parquet`, `NAME.rejects.jsonl`, `NAME.summary.json`.

Writing (`write_converted`, called by `Converter.run`): an older summary is dropped first, then the
Parquet file and the rejects are written, and the summary last: the summary marks a complete
conversion, so a run killed in between never leaves new rows beside a stale summary.

Reading (`read_converted`, for build-corpus): each problem with the input is one `UserError` line that names the
file: a missing folder, a Parquet file without its summary (or the reverse), an unreadable file, a wrong schema, values
outside the record vocabulary, or a file whose rows claim another dataset than its name.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import manifests
from common.errors import UserError, first_line
from common.fileio import read_parquet, remove_temporaries, write_json, write_jsonl, write_parquet
from common.records import KINDS, SPLITS

from ..registry import DATASETS
from .schema import RECORD_SCHEMA

log = logging.getLogger(__name__)

PARQUET_SUFFIX = ".parquet"
REJECTS_SUFFIX = ".rejects.jsonl"
SUMMARY_SUFFIX = ".summary.json"
REQUIRED_COLUMNS_WITHOUT_NULLS = (
    "dataset",
    "image",
    "image_id",
    "split",
    "kind",
    "source",
)  # a null `text` is an empty text


def parquet_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}{PARQUET_SUFFIX}"


def rejects_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}{REJECTS_SUFFIX}"


def summary_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}{SUMMARY_SUFFIX}"


def is_converted(folder: Path, name: str) -> bool:
    """Whether `folder` holds a finished conversion of `name`: its summary is written last, beside the rows."""
    return summary_path(folder, name).is_file() and parquet_path(folder, name).is_file()


# -- writing ----------------------------------------------------------------------------------
def write_converted(folder: Path, name: str, table: pa.Table, rejects: list[dict], summary: dict) -> None:
    """Write one dataset's rows, rejects and (last) summary into `folder` (held with `common.locks.folder_lock`).

    Temporaries that a killed run left beside these files are removed first.
    """
    for path in (parquet_path(folder, name), rejects_path(folder, name), summary_path(folder, name)):
        remove_temporaries(path)
    summary_path(folder, name).unlink(missing_ok=True)
    with ThreadPoolExecutor(1) as pool:  # Parquet encoding runs in C++ beside the Python rejects writer
        parquet = pool.submit(write_parquet, table, parquet_path(folder, name))
        write_jsonl(rejects, rejects_path(folder, name))
        parquet.result()
    write_json(summary, summary_path(folder, name))


# -- reading ----------------------------------------------------------------------------------
@dataclass
class Source:
    """One converted dataset: its rows (RECORD_SCHEMA), its summary and its manifest (None if it has none)."""

    name: str
    table: pa.Table
    summary: dict
    manifest: dict | None

    @property
    def root(self) -> str:
        return self.summary["root"].rstrip("/") or "/"

    @property
    def split_policy(self) -> str:
        """`official` (keep the converted split) or `none` (the corpus splits it by person)."""
        return self.manifest["split"] if self.manifest else "official"


@dataclass
class ConvertedSet:
    sources: list[Source]  # in registry order
    absent: list[str]  # registry names with no converted file
    manifests: dict[str, dict | None] = field(default_factory=dict)  # every registry name -> manifest or None

    def split_by_person(self) -> np.ndarray:
        """Per registry name: whether its manifest says `split: none` (the corpus splits it by person)."""
        return np.array([(self.manifests.get(name) or {}).get("split") == "none" for name in DATASETS])

    def concatenated(self) -> pa.Table:
        """All rows, datasets in registry order, each in its converted row order."""
        return pa.concat_tables([s.table for s in self.sources])


def load_manifest(name: str) -> dict | None:
    """The dataset's manifest, or None where the project has none yet (its facts are then unknown)."""
    try:
        return manifests.load(name)
    except FileNotFoundError:
        log.warning("no manifest for %s: its licence, paper count and split policy are unknown", name)
        return None


def read_converted(folder: Path) -> ConvertedSet:
    """Find, check and read every converted dataset in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"converted folder {folder} is not a directory (run `convert` first)")
    parquets = _files_with_suffix(folder, PARQUET_SUFFIX)
    summaries = _files_with_suffix(folder, SUMMARY_SUFFIX)
    _check_names(folder, parquets, summaries)
    names = [n for n in DATASETS if n in parquets]
    if not names:
        raise UserError(
            f"{folder}: no converted dataset found (expected NAME{PARQUET_SUFFIX} and "
            f"NAME{SUMMARY_SUFFIX}, NAME one of: {', '.join(DATASETS)})"
        )
    all_manifests = {name: load_manifest(name) for name in DATASETS}
    sources = [_read_source(name, parquets[name], summaries[name], all_manifests[name]) for name in names]
    absent = [n for n in DATASETS if n not in parquets]
    log.info(
        "read %d converted datasets (%d rows); absent: %s",
        len(sources),
        sum(s.table.num_rows for s in sources),
        ", ".join(absent) or "none",
    )
    return ConvertedSet(sources, absent, all_manifests)


def _files_with_suffix(folder: Path, suffix: str) -> dict[str, Path]:
    found = sorted(p for p in folder.iterdir() if p.name.endswith(suffix) and not p.name.startswith("."))
    return {p.name[: -len(suffix)]: p for p in found}


def _check_names(folder: Path, parquets: dict[str, Path], summaries: dict[str, Path]) -> None:
    for stem, path in parquets.items():
        if stem not in DATASETS:
            _unknown_parquet(path, stem, parquets)
        if stem not in summaries:
            raise UserError(
                f"{path}: no {stem}{SUMMARY_SUFFIX} beside it (the summary is written last: "
                f"was `convert {stem}` interrupted?)"
            )
    for stem, path in summaries.items():
        if stem not in parquets:
            raise UserError(f"{path}: no {stem}{PARQUET_SUFFIX} beside it; re-run `convert {stem}`")


def _unknown_parquet(path: Path, stem: str, parquets: dict[str, Path]) -> None:
    claimed = _claimed_datasets(path)
    known = [c for c in claimed if c in DATASETS]
    if known and known[0] in parquets:
        raise UserError(
            f"two files claim dataset {known[0]!r}: {parquets[known[0]].name} and {path.name}; "
            f"keep one of them in {path.parent}"
        )
    if known:
        raise UserError(
            f"{path}: its rows claim dataset {known[0]!r} but the file is named {stem!r}; "
            f"name it {known[0]}{PARQUET_SUFFIX} with its summary"
        )
    raise UserError(f"{path}: {stem!r} is not a dataset name; expected one of: {', '.join(DATASETS)}")


def _claimed_datasets(path: Path) -> list[str]:
    try:
        column = read_parquet(path, ["dataset"]).column("dataset")
    except (OSError, pa.ArrowException, KeyError):
        return []
    return sorted(v for v in pc.unique(column).to_pylist() if v is not None)


def _read_source(name: str, parquet: Path, summary_path: Path, manifest: dict | None) -> Source:
    _check_schema(parquet, _read_schema(parquet))
    table = _read_table(parquet)
    _check_values(parquet, name, table)
    table = table.cast(RECORD_SCHEMA)
    summary = _read_summary(summary_path, name)
    if summary["rows"] != table.num_rows:
        raise UserError(
            f"{summary_path}: says {summary['rows']} rows but {parquet.name} holds {table.num_rows}: "
            f"the two are from different runs; re-run `convert {name}`"
        )
    return Source(name, table, summary, manifest)


def _read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as e:
        raise UserError(f"{path}: not a readable Parquet file ({first_line(e)})") from None


def _check_schema(path: Path, schema: pa.Schema) -> None:
    names = schema.names
    missing = [n for n in RECORD_SCHEMA.names if n not in names]
    extra = [n for n in names if n not in RECORD_SCHEMA.names]
    if missing or extra or len(set(names)) != len(names):
        parts = (
            ([f"missing column(s) {', '.join(missing)}"] if missing else [])
            + ([f"unexpected column(s) {', '.join(extra)}"] if extra else [])
            + (["repeated column names"] if len(set(names)) != len(names) else [])
        )
        raise UserError(f"{path}: not a converted-records file: {'; '.join(parts)}")
    for expected in RECORD_SCHEMA:
        got = schema.field(expected.name).type
        if not got.equals(expected.type):
            raise UserError(f"{path}: column {expected.name!r} is {got}, expected {expected.type}")


def _read_table(path: Path) -> pa.Table:
    try:
        table = read_parquet(path, RECORD_SCHEMA.names)
    except (OSError, pa.ArrowException) as e:
        raise UserError(f"{path}: cannot read ({first_line(e)})") from None
    return table.select(RECORD_SCHEMA.names)


def _check_values(path: Path, name: str, table: pa.Table) -> None:
    for column in REQUIRED_COLUMNS_WITHOUT_NULLS:
        nulls = table.column(column).null_count
        if nulls:
            raise UserError(f"{path}: {nulls} rows have no {column}")
    claimed = [d for d in pc.unique(table.column("dataset")).to_pylist() if d != name]
    if claimed:
        raise UserError(
            f"{path}: rows claim dataset {claimed[0]!r} but the file is {name}{PARQUET_SUFFIX}; "
            f"two files claim one dataset, or the file was renamed"
        )
    for column, allowed in (("split", SPLITS), ("kind", KINDS)):
        bad = pc.unique(table.column(column).filter(pc.invert(pc.is_in(table.column(column), pa.array(allowed)))))
        if len(bad):
            raise UserError(f"{path}: {column} {bad[0].as_py()!r} is not one of {', '.join(allowed)}")


def _read_summary(path: Path, name: str) -> dict:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({first_line(e)})") from None
    if not isinstance(summary, dict):
        raise UserError(f"{path}: expected a JSON object (the converter summary)")
    if summary.get("dataset", name) != name:
        raise UserError(f"{path}: says dataset {summary['dataset']!r} but is named for {name!r}")
    missing = [k for k in ("root", "rows") if k not in summary]
    if missing:
        raise UserError(f"{path}: summary lacks {', '.join(missing)} (written by an older converter?)")
    return summary
