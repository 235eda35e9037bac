"""Fast, line-exact readers for the text annotation formats (whitespace tables and simple CSVs).

The whole file is split by pyarrow in C++, so a 200k-line table parses in well under a second,
and every data row keeps its 1-based line number for the `source` column and the rejects report.
Blank lines are not records and are skipped silently.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import UserError


@dataclass
class Columns:
    """The well-formed rows of a table: string columns by name, with their line numbers."""

    rel: str  # the file, relative to the dataset root
    names: list[str]
    columns: dict[str, pa.Array]
    line: np.ndarray  # 1-based line number of each row
    malformed: int = 0  # lines rejected for a wrong number of fields

    @property
    def records(self) -> int:
        """Source records read: the well-formed rows and the malformed lines."""
        return len(self.line) + self.malformed

    def __len__(self) -> int:
        return len(self.line)

    def __getitem__(self, name: str) -> pa.Array:
        return self.columns[name]

    def sources(self) -> pa.Array:
        return pc.binary_join_element_wise(self.rel, pc.cast(pa.array(self.line), pa.string()), ":")


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    return data.decode("utf-8-sig", errors="replace")


def split_lines(text: str, sep: str | None) -> tuple[pa.ListArray, np.ndarray]:
    """All non-blank lines split into fields (`sep=None`: any run of whitespace), with line numbers."""
    lines = pa.array(text.splitlines(), pa.string())
    numbers = np.arange(1, len(lines) + 1)
    stripped = pc.utf8_trim_whitespace(lines)
    nonblank = pc.not_equal(stripped, "").to_numpy(zero_copy_only=False)
    stripped, numbers = stripped.filter(pa.array(nonblank)), numbers[nonblank]
    if sep is None:
        fields = pc.utf8_split_whitespace(stripped)
    else:
        fields = pc.split_pattern(stripped, sep)
    return fields, numbers


def to_columns(fields: pa.ListArray, numbers: np.ndarray, names: list[str], rel: str, reject) -> Columns:
    """Keep rows with exactly len(names) fields; every other row is rejected as a malformed line."""
    width = len(names)
    lengths = pc.list_value_length(fields).to_numpy(zero_copy_only=False)
    good = lengths == width
    for i in np.flatnonzero(~good):
        reject(f"{rel}:{numbers[i]}", "malformed line", f"expected {width} fields, found {lengths[i]}")
    fields = fields.filter(pa.array(good))
    flat = pc.utf8_trim_whitespace(pc.list_flatten(fields))
    n = len(fields)
    columns = {name: flat.take(pa.array(np.arange(j, n * width, width))) for j, name in enumerate(names)}
    return Columns(rel, list(names), columns, numbers[good], int((~good).sum()))


def read_table(path: Path, rel: str, names: list[str], reject, *, sep: str | None = None, skip_lines: int = 0) -> Columns:
    """A headerless table (or one whose first `skip_lines` non-blank lines are not data)."""
    fields, numbers = split_lines(read_text(path), sep)
    return to_columns(fields[skip_lines:], numbers[skip_lines:], names, rel, reject)


def read_csv(path: Path, rel: str, required: list[str], reject) -> Columns:
    """A CSV with a header row; columns are found by name (any order, extra columns ignored)."""
    text = read_text(path)
    if '"' in text:  # quoted fields: let the csv module do the quoting, then reuse the fast path
        rows = list(csv.reader(io.StringIO(text)))
        text = "\n".join("\x1f".join(row) for row in rows)
        fields, numbers = split_lines(text, "\x1f")
    else:
        fields, numbers = split_lines(text, ",")
    if len(fields) == 0:
        raise UserError(f"{path}: empty file, expected a CSV header with {', '.join(required)}")
    header = [h.strip() for h in fields[0].as_py()]
    missing = [name for name in required if name not in header]
    if missing:
        raise UserError(f"{path}:{numbers[0]}: header lacks column(s) {', '.join(missing)} (found: {', '.join(header)})")
    table = to_columns(fields[1:], numbers[1:], header, rel, reject)
    return Columns(rel, required, {name: table.columns[name] for name in required}, table.line, table.malformed)
