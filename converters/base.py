"""The interface every dataset converter implements, and the machinery they share.

A converter is declared like a tensorflow-datasets builder: a `name` (its registry key and the
name of its manifest), an `Options` dataclass for its switches, and `convert()`, which yields
tables of RECORD_SCHEMA. The base class finds files under the root, lists image folders,
keeps the rejects report, and `run()` writes the Parquet file, the rejects and the summary.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import manifests
from common.errors import UserError
from common.fileio import write_json, write_jsonl, write_parquet
from common.records import SPLITS

from .rows import map_values, prefixed
from .schema import RECORD_SCHEMA

log = logging.getLogger(__name__)

SEARCH_DEPTH = 3  # annotation files may sit up to two folder levels below the root (re-zipped downloads)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
UNSAFE_PATH = r"(^/|^[A-Za-z]:|^~|\\|(^|/)\.\.(/|$))"


@dataclasses.dataclass
class NoOptions:
    pass


class Converter:
    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    def __init__(self, root: Path, options=None):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise UserError(f"{self.name}: dataset root {self.root} is not a directory")
        self.options = options if options is not None else self.Options()
        self.manifest = manifests.load(self.name)
        self.rejects: list[dict] = []
        self.records_in = 0
        self.notes: list[str] = []  # facts worth a line in the summary (variant found, corrections made)
        self._listings: dict[Path, frozenset[str]] = {}
        self._scans: dict[Path, tuple[dict, list[Path]]] = {}

    # -- to implement ---------------------------------------------------------------------
    def convert(self) -> Iterator[pa.Table]:
        """Yield tables of RECORD_SCHEMA; count every source record read and reject what is dropped."""
        raise NotImplementedError

    # -- bookkeeping ----------------------------------------------------------------------
    def count_records(self, n: int) -> None:
        self.records_in += int(n)

    def reject(self, source: str, reason: str, detail: str = "") -> None:
        self.rejects.append({"source": source, "reason": reason, "detail": detail})

    def reject_where(self, columns: dict, bad, reason: str, detail=None) -> dict:
        """Reject the rows where `bad` is true (logging `columns['source']`) and return the others.

        `detail` is a string, or an array of per-row details, or None.
        """
        bad = np.asarray(bad, dtype=bool)
        if not bad.any():
            return columns
        sources = pa.array(columns["source"]).filter(pa.array(bad)).to_pylist()
        if detail is None or isinstance(detail, str):
            details = [detail or ""] * len(sources)
        else:
            details = pa.array(detail).filter(pa.array(bad)).to_pylist()
        for source, d in zip(sources, details):
            self.reject(source, reason, d if d is not None else "")
        keep = pa.array(~bad)
        return {k: (v.filter(keep) if isinstance(v, (pa.Array, pa.ChunkedArray)) else v[~bad]) for k, v in columns.items()}

    def map_labels(self, columns: dict, names: list[str], mapping: dict, encoded: bool = False) -> dict:
        """Map each named column through `mapping` (code -> name); reject rows holding any other value.

        Values are mapped once per distinct value (dictionary-encoded); `encoded=True` keeps the
        columns as dictionary arrays, which `rows.attribute_columns` consumes without re-encoding.
        """
        n = len(columns["source"])
        bad = np.zeros(n, dtype=bool)
        detail = np.full(n, "", dtype=object)
        for name in names:
            raw = columns[name]
            codes = pc.dictionary_encode(raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw)
            mapped = pa.DictionaryArray.from_arrays(codes.indices, map_values(codes.dictionary, mapping))
            columns[name] = mapped if encoded else mapped.cast(pa.string())
            unknown = mapped.is_null().to_numpy(zero_copy_only=False) & ~bad
            if unknown.any():
                detail[unknown] = [f"{name}={v!r}" for v in raw.filter(pa.array(unknown)).to_pylist()]
                bad |= unknown
        return self.reject_where(columns, bad, "unknown label value", pa.array(detail.tolist(), pa.string()))

    # -- finding files --------------------------------------------------------------------
    def find_file(self, *names: str, under: Path | None = None, required: bool = True) -> Path | None:
        """The shallowest file with one of `names` (case-insensitive) within SEARCH_DEPTH levels."""
        return self._find(names, under, want_dir=False, required=required)

    def find_dir(self, *names: str, under: Path | None = None, required: bool = True) -> Path | None:
        return self._find(names, under, want_dir=True, required=required)

    def _find(self, names, under, want_dir, required):
        wanted = {n.lower(): i for i, n in enumerate(names)}
        start = under or self.root
        level = [start]
        for _ in range(SEARCH_DEPTH):
            exact = [(i, folder / name) for folder in level for i, name in enumerate(names)
                     if (folder / name).is_dir() == want_dir and (folder / name).exists()]
            if exact:  # the usual case, found without listing big image folders
                return min(exact)[1]
            hits, deeper = [], []
            for folder in level:
                entries, subdirs = self._scan(folder)
                hits += [(wanted[low], folder / name) for low, (name, is_dir) in entries.items()
                         if low in wanted and is_dir == want_dir]
                deeper += subdirs
            if hits:
                return min(hits)[1]
            level = deeper
        if required:
            kind = "folder" if want_dir else "file"
            raise UserError(f"{self.name}: no {kind} named {' or '.join(names)} under {start} "
                            f"(looked {SEARCH_DEPTH} levels deep); is --root the extracted download?")
        return None

    def _scan(self, folder: Path) -> tuple[dict, list[Path]]:
        """One folder's entries by lower-case name, and its visible subfolders (sorted), read once."""
        if folder not in self._scans:
            entries, subdirs = {}, []
            with os.scandir(folder) as it:
                for entry in it:
                    is_dir = entry.is_dir()
                    entries.setdefault(entry.name.lower(), (entry.name, is_dir))
                    if is_dir and not entry.name.startswith("."):
                        subdirs.append(Path(entry.path))
            self._scans[folder] = (entries, sorted(subdirs))
        return self._scans[folder]

    def rel(self, path: Path) -> str:
        """A path under the root as a POSIX string relative to the root."""
        return PurePosixPath(Path(path).relative_to(self.root)).as_posix()

    def listing(self, folder: Path) -> frozenset[str]:
        """Names of the files in one folder, read once (existence is checked by listing, not opening)."""
        folder = Path(folder)
        if folder not in self._listings:
            try:
                # os.listdir is ~6x faster than filtering scandir entries; a folder named like an
                # image is not worth that cost
                self._listings[folder] = frozenset(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError):
                self._listings[folder] = frozenset()
        return self._listings[folder]

    def existing(self, images: pa.Array, folders: Iterable[Path]) -> np.ndarray:
        """Mask of the root-relative image paths that exist in the given folders."""
        present = []
        for folder in folders:
            names = pa.array(list(self.listing(folder)), pa.string())  # a set: order does not matter
            present.append(names if Path(folder) == self.root else prefixed(self.rel(folder) + "/", names))
        value_set = pa.concat_arrays(present) if present else pa.array([], pa.string())
        return pc.is_in(images, value_set=value_set).to_numpy(zero_copy_only=False)

    def drop_missing_images(self, columns: dict, folders: Iterable[Path]) -> dict:
        """Reject rows whose path escapes the root, then rows whose image is not on disk."""
        unsafe = pc.match_substring_regex(columns["image"], UNSAFE_PATH).to_numpy(zero_copy_only=False)
        columns = self.reject_where(columns, unsafe, "path escapes root", columns["image"])
        missing = ~self.existing(columns["image"], folders)
        return self.reject_where(columns, missing, "image missing", columns["image"])

    # -- running --------------------------------------------------------------------------
    def run(self, out: Path) -> dict:
        """Convert and write OUT/NAME.parquet, NAME.rejects.jsonl and (last) NAME.summary.json."""
        tables = [t for t in self.convert() if t.num_rows]
        table = pa.concat_tables(tables) if tables else RECORD_SCHEMA.empty_table()
        summary = self.summary(table)
        if summary["records_in"] != summary["rows"] + summary["rejects"]["total"]:
            raise RuntimeError(f"{self.name}: {summary['records_in']} records in, but {summary['rows']} rows "
                               f"+ {summary['rejects']['total']} rejects out; a converter lost records")
        out = Path(out)
        # The summary marks a complete conversion: drop an older one first, so a run killed between
        # the files below never leaves a new Parquet file beside a stale summary.
        (out / f"{self.name}.summary.json").unlink(missing_ok=True)
        with ThreadPoolExecutor(1) as pool:  # Parquet encoding runs in C++ beside the Python rejects writer
            parquet = pool.submit(write_parquet, table, out / f"{self.name}.parquet")
            write_jsonl(self.rejects, out / f"{self.name}.rejects.jsonl")
            parquet.result()
        write_json(summary, out / f"{self.name}.summary.json")
        return summary

    def summary(self, table: pa.Table) -> dict:
        splits, kinds = value_counts(table.column("split")), value_counts(table.column("kind"))
        counts = self.manifest["counts"]
        return {
            "dataset": self.name,
            "root": str(self.root),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self.options).items()},
            "records_in": self.records_in,
            "rows": table.num_rows,
            "images": len(pc.unique(table.column("image_id"))),
            "rejects": {"total": len(self.rejects), "by_reason": dict(sorted(Counter(r["reason"] for r in self.rejects).items()))},
            "splits": {s: splits.get(s, 0) for s in SPLITS},
            "kinds": dict(sorted(kinds.items())),
            "expected": {"official": counts["official"], "paper": counts["paper"]},
            "notes": self.notes,
        }


def value_counts(column) -> dict:
    return {c["values"]: c["counts"] for c in pc.value_counts(column).to_pylist()}
