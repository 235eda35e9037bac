"""The interface every dataset converter implements, and the bookkeeping they share.

A converter is declared like a tensorflow-datasets builder: a `name` (its registry key and the
name of its manifest), an `Options` dataclass for its switches where it has any, and `convert()`,
which yields tables of RECORD_SCHEMA. It holds its dataset folder as `self.tree`
(`converters.helpers.root.DatasetRoot`: finding files, listings, the unsafe-path rule). The base class
keeps the bookkeeping (records in; rejects, with the one duplicate rule and the one column-checking
loop; notes), and `run()` checks that nothing was lost and
writes the converted layout (`converters.helpers.converted`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import manifests
from common.arrays import first_positions
from common.records import SPLITS

from .converted import write_converted
from .root import DatasetRoot
from .rows import map_values
from .schema import RECORD_SCHEMA

log = logging.getLogger(__name__)

DUPLICATE = "duplicate line"  # the one wording for a record repeated in its annotation file


@dataclasses.dataclass
class NoOptions:
    pass


class Converter:
    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    def __init__(self, root: Path, options=None):
        self.tree = DatasetRoot(root, self.name)
        self.options = options if options is not None else self.Options()
        self.manifest = manifests.load(self.name)
        self.rejects: list[dict] = []
        self.records_in = 0
        self.notes: list[str] = []  # facts worth a line in the summary (variant found, corrections made)

    @property
    def root(self) -> Path:
        """The dataset folder (resolved) that `image` and `source` paths are relative to."""
        return self.tree.path

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
        return {
            k: (v.filter(keep) if isinstance(v, (pa.Array, pa.ChunkedArray)) else v[~bad]) for k, v in columns.items()
        }

    def reject_repeats(self, columns: dict, key, reason: str = DUPLICATE) -> dict:
        """Reject every row whose `key` already appeared in an earlier row (the first is kept), naming that row.

        The one duplicate rule of all converters: a record repeated in its file is a `duplicate line`
        (key: the record's name, path or whole line); `reason` names another kind of key (`duplicate face`).
        """
        key = key if isinstance(key, (pa.Array, pa.ChunkedArray)) else pa.array(key)
        if len(pc.unique(key)) == len(key):  # the usual case, and cheaper than finding first positions
            return columns
        first = first_positions(key)
        detail = pc.binary_join_element_wise("same as ", columns["source"].take(pa.array(first)), "")
        return self.reject_where(columns, first != np.arange(len(first)), reason, detail)

    def reject_failing(
        self,
        columns: dict,
        failing: dict[str, np.ndarray],
        reason: str,
        describe: str | dict[str, str] = "{}={!r}",
        values: dict | None = None,
    ) -> dict:
        """Reject the rows where any column's mask in `failing` (name -> mask) is true, each detailed by its first
        failing column (in `failing`'s order): `describe` (one template, or one per column) formatted with the
        column's name and value (taken from `values` where given, else from `columns`).

        The one column-checking loop of all converters: label values, missing values, numbers.
        """
        bad = np.zeros(len(columns["source"]), dtype=bool)
        detail = np.full(len(bad), "", dtype=object)
        for name, mask in failing.items():
            new = np.asarray(mask, dtype=bool) & ~bad
            if new.any():
                template = describe[name] if isinstance(describe, dict) else describe
                shown = (values or columns)[name].filter(pa.array(new)).to_pylist()
                detail[new] = [template.format(name, value) for value in shown]
                bad |= new
        return self.reject_where(columns, bad, reason, pa.array(detail.tolist(), pa.string()))

    def map_labels(self, columns: dict, names: list[str], mapping: dict, encoded: bool = False) -> dict:
        """Map each named column through `mapping` (code -> name); reject rows holding any other value.

        Values are mapped once per distinct value (dictionary-encoded); `encoded=True` keeps the
        columns as dictionary arrays, which `rows.attribute_columns` consumes without re-encoding.
        """
        raw, unknown = {name: columns[name] for name in names}, {}
        for name in names:
            codes = pc.dictionary_encode(
                raw[name].combine_chunks() if isinstance(raw[name], pa.ChunkedArray) else raw[name]
            )
            mapped = pa.DictionaryArray.from_arrays(codes.indices, map_values(codes.dictionary, mapping))
            columns[name] = mapped if encoded else mapped.cast(pa.string())
            unknown[name] = mapped.is_null().to_numpy(zero_copy_only=False)
        return self.reject_failing(columns, unknown, "unknown label value", values=raw)

    def reject_unsafe(self, columns: dict, column: str, where: np.ndarray | None = None) -> dict:
        """Reject the rows whose path in `column` would escape the root (checked only `where` given)."""
        unsafe = self.tree.escapes(columns[column], where)
        return self.reject_where(columns, unsafe, "path escapes root", columns[column])

    def drop_missing_images(self, columns: dict, folders: Iterable[Path]) -> dict:
        """Reject rows whose path escapes the root, then rows whose image is not on disk."""
        columns = self.reject_unsafe(columns, "image")
        missing = ~self.tree.existing(columns["image"], folders)
        return self.reject_where(columns, missing, "image missing", columns["image"])

    # -- running --------------------------------------------------------------------------
    def run(self, out: Path) -> dict:
        """Convert, check that records in = rows out + rejects, and write the converted layout into `out`."""
        tables = [t for t in self.convert() if t.num_rows]
        table = pa.concat_tables(tables) if tables else RECORD_SCHEMA.empty_table()
        summary = self.summary(table)
        if summary["records_in"] != summary["rows"] + summary["rejects"]["total"]:
            raise RuntimeError(
                f"{self.name}: {summary['records_in']} records in, but {summary['rows']} rows "
                f"+ {summary['rejects']['total']} rejects out; a converter lost records"
            )
        write_converted(Path(out), self.name, table, self.rejects, summary)
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
            "rejects": {
                "total": len(self.rejects),
                "by_reason": dict(sorted(Counter(r["reason"] for r in self.rejects).items())),
            },
            "splits": {s: splits.get(s, 0) for s in SPLITS},
            "kinds": dict(sorted(kinds.items())),
            "expected": {"official": counts["official"], "paper": counts["paper"]},
            "notes": self.notes,
        }


def value_counts(column) -> dict:
    return {c["values"]: c["counts"] for c in pc.value_counts(column).to_pylist()}
