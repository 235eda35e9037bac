"""Fast, line-exact readers for the text annotation formats (whitespace tables and simple CSVs).

Files are parsed by pyarrow's CSV reader in C++ (a 200k-line table in well under a second, less
than pandas needs), and every data row keeps its 1-based line number for the `source` column and
the rejects report. A line with the wrong number of fields is rejected as `malformed line`;
blank lines are not records and are skipped silently. In a CSV, a stray quote would join the lines
up to the next quote into one row: the lines holding an odd number of quotes are then rejected as
`malformed line` (`unbalanced quote`) and the others parsed as usual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from common.errors import UserError


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


def read_bytes(path: Path) -> bytes:
    """A text file's bytes with `\\n` line ends and no BOM. UTF-8 is checked by the parser, not here,
    so a 450 MB annotation file is held once, not decoded into a second copy."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data


def read_text(path: Path) -> str:
    return read_bytes(path).decode("utf-8", errors="replace")


def read_json(path: Path):
    """A JSON file; unreadable or invalid JSON is a user error naming the file and line."""
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; expected a JSON file") from None
    except RecursionError:
        raise UserError(NESTED_TOO_DEEPLY.format(path=path)) from None


NESTED_TOO_DEEPLY = "{path}: JSON nested too deeply to be an annotation file"


def head_lines(path: Path, n: int, max_bytes: int = 1 << 16) -> list[str]:
    """The first `n` lines of a text file, reading no more than its head."""
    try:
        with open(path, "rb") as f:
            head = f.read(max_bytes)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    return head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace").splitlines()[:n]


def squeeze_whitespace(data: bytes) -> bytes:
    """Runs of spaces and tabs to one space, none at line ends (CelebA pads with double spaces)."""
    if not any(pattern in data for pattern in (b"  ", b"\t", b" \n", b"\n ")) and not data.startswith(b" "):
        return data
    chars = np.frombuffer(data, dtype=np.uint8).copy()
    chars[chars == 9] = 32  # tab -> space
    space = chars == 32
    after_break = np.ones(len(chars), dtype=bool)  # a space at a line start or after a space goes
    after_break[1:] = space[:-1] | (chars[:-1] == 10)
    chars = chars[~(space & after_break)]
    space = chars == 32
    before_break = np.ones(len(chars), dtype=bool)  # so does the one space left before a line end
    before_break[:-1] = chars[1:] == 10
    return chars[~(space & before_break)].tobytes()


def parse_rows(
    data: bytes,
    names: list[str],
    rel: str,
    reject,
    *,
    first_line: int,
    delimiter: str,
    quoted: bool,
    keep: list[str] | None = None,
) -> Columns:
    """Parse the lines from `first_line` (1-based) on into string columns `names` (only `keep` ones built)."""
    keep = list(keep or names)
    try:
        return _parse_numbered(data, names, keep, rel, reject, first_line, delimiter, quoted)
    except _Misaligned as e:
        if not quoted:
            raise UserError(f"{rel}: {e}") from None
    data, unbalanced = blank_unbalanced_quotes(data, first_line)
    try:
        table = _parse_numbered(data, names, keep, rel, reject, first_line, delimiter, quoted)
    except _Misaligned as e:
        raise UserError(f"{rel}: {e}; its quotes do not pair up") from None
    for number in unbalanced:
        reject(f"{rel}:{number}", "malformed line", "unbalanced quote")
    table.malformed += len(unbalanced)
    return table


def _parse_numbered(data, names, keep, rel, reject, first_line, delimiter, quoted) -> Columns:
    if not data:
        return Columns(rel, keep, {name: pa.array([], pa.string()) for name in keep}, np.zeros(0, np.int64))
    try:
        try:
            return _parse_rows(data, names, keep, rel, reject, first_line, delimiter, quoted, use_threads=True)
        except _LineNumbersUnknown:  # an invalid row in a later block: only a single-threaded parse numbers it
            return _parse_rows(data, names, keep, rel, reject, first_line, delimiter, quoted, use_threads=False)
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e) or "Could not skip initial" in str(e):  # nothing after the header: no rows
            return _parse_numbered(b"", names, keep, rel, reject, first_line, delimiter, quoted)
        if "UTF8" not in str(e) and "UTF-8" not in str(e):
            raise UserError(f"{rel}: cannot be parsed as a table ({first_line(e)})") from None
    data = data.decode("utf-8", errors="replace").encode("utf-8")  # undecodable bytes become U+FFFD
    return _parse_rows(data, names, keep, rel, reject, first_line, delimiter, quoted, use_threads=False)


def blank_unbalanced_quotes(data: bytes, first_line: int) -> tuple[bytes, list[int]]:
    """Empty the lines (from `first_line` on) holding an odd number of quotes; their 1-based numbers."""
    lines = data.split(b"\n")
    odd = [i for i in range(first_line - 1, len(lines)) if lines[i].count(b'"') % 2]
    for i in odd:
        lines[i] = b""
    return b"\n".join(lines), [i + 1 for i in odd]


class _LineNumbersUnknown(Exception):
    pass


class _Misaligned(Exception):
    """The parser's rows do not match the file's lines one to one."""


def _parse_rows(data, names, keep, rel, reject, first_line, delimiter, quoted, use_threads) -> Columns:
    bad: dict[int, str] = {}
    unnumbered = []

    def on_invalid(row) -> str:
        if row.number is None:
            unnumbered.append(row.text)
            return "error"
        if row.text.strip():
            bad[row.number] = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        else:
            bad[row.number] = ""  # a blank line: not a record
        return "skip"

    try:
        table = _read(data, names, keep, first_line, delimiter, quoted, use_threads, on_invalid)
    except pa.ArrowInvalid:
        if unnumbered:
            raise _LineNumbersUnknown from None
        raise
    total = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    numbers = np.arange(first_line, total + 1)
    if bad:
        numbers = numbers[~np.isin(numbers, np.fromiter(bad, dtype=np.int64))]
    if len(numbers) != table.num_rows:
        raise _Misaligned(f"{len(numbers)} lines but {table.num_rows} rows")
    blank = np.isin(numbers, empty_lines(data))  # pyarrow reads an empty line as a row of empty fields
    if blank.any():
        table, numbers = table.filter(pa.array(~blank)), numbers[~blank]
    malformed = 0
    for number, detail in sorted(bad.items()):
        if detail:
            reject(f"{rel}:{number}", "malformed line", detail)
            malformed += 1
    columns = {name: table.column(name).combine_chunks() for name in keep}
    return Columns(rel, keep, columns, numbers, malformed)


def _read(data, names, keep, first_line, delimiter, quoted, use_threads, on_invalid) -> pa.Table:
    return pcsv.read_csv(
        pa.BufferReader(pa.py_buffer(data)),
        read_options=pcsv.ReadOptions(column_names=names, skip_rows=first_line - 1, use_threads=use_threads),
        parse_options=pcsv.ParseOptions(
            delimiter=delimiter,
            quote_char='"' if quoted else False,
            ignore_empty_lines=False,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pcsv.ConvertOptions(
            column_types={n: pa.string() for n in keep},
            include_columns=keep,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def empty_lines(data: bytes) -> np.ndarray:
    """1-based numbers of the lines with no character at all (found with bytes.find: they are rare)."""
    numbers = [1] if data.startswith(b"\n") else []
    newlines_before, counted_to = 0, 0
    at = data.find(b"\n\n")
    while at >= 0:
        newlines_before += data.count(b"\n", counted_to, at)
        counted_to = at
        numbers.append(newlines_before + 2)  # the newline at `at` ends line newlines_before + 1
        at = data.find(b"\n\n", at + 1)
    return np.array(numbers, dtype=np.int64)


def read_table(
    path: Path, rel: str, names: list[str], reject, *, sep: str | None = None, skip_lines: int = 0
) -> Columns:
    """A headerless table split on whitespace (`sep=None`) or on `sep`; the first `skip_lines` lines are not data."""
    data = read_bytes(path)
    if not data.strip():
        raise UserError(f"{path}: empty file; expected lines of {' '.join(names)}")
    if sep is None:
        data, sep = squeeze_whitespace(data), " "
    return parse_rows(data, names, rel, reject, first_line=skip_lines + 1, delimiter=sep, quoted=False)


def read_csv(path: Path, rel: str, required: list[str], reject) -> Columns:
    """A CSV with a header row; columns are found by name (any order). Only the required columns are
    built: AffectNet's 136 landmarks a row are tokenized, never materialised."""
    data = read_bytes(path)
    header_line, header = csv_header(data, path, required)
    table = parse_rows(
        data, header, rel, reject, first_line=header_line + 1, delimiter=",", quoted=b'"' in data, keep=required
    )
    columns = {name: pc.utf8_trim_whitespace(table.columns[name]) for name in required}
    return Columns(rel, required, columns, table.line, table.malformed)


def csv_header(data: bytes, path: Path, required: list[str]) -> tuple[int, list[str]]:
    """The 1-based number and the names of the first non-blank line, which must name the required columns."""
    offset, number = 0, 1
    while offset < len(data):
        end = data.find(b"\n", offset)
        end = len(data) if end < 0 else end
        line = data[offset:end].decode("utf-8", errors="replace").strip()
        if line and not line.isprintable():
            raise UserError(
                f"{path}:{number}: expected a CSV header with {', '.join(required)}, "
                "found a line that is not text (a binary or corrupt file?)"
            )
        if line:
            header = [h.strip().strip('"') for h in line.split(",")]
            missing = [name for name in required if name not in header]
            if missing:
                raise UserError(
                    f"{path}:{number}: header lacks column(s) {', '.join(missing)} (found: {', '.join(header)})"
                )
            return number, header
        offset, number = end + 1, number + 1
    raise UserError(f"{path}: empty file, expected a CSV header with {', '.join(required)}")
