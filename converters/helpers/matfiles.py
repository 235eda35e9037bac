"""MATLAB .mat annotation files: a struct of columns, read field by field by name.

Two on-disk formats hold the same MATLAB data:
  v5/v7 (`scipy.io.loadmat`): a struct variable is a (1, 1) record array; each field is a column
      (an N x 1 or 1 x N numeric array, or a cell array whose elements are 1-element string arrays).
  v7.3 (HDF5, read with h5py; scipy refuses it): a struct is a group with one dataset per field,
      stored transposed; a cell array is a dataset of object references, each to a uint16 char
      array (MATLAB_class 'char'); an empty value carries the attribute MATLAB_empty.
`read_struct` hides the difference: numbers come back as float64 vectors, strings as a pyarrow
string column ("" for an empty string, null where the cell does not hold a string).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
from h5py import h5d, h5r, h5s, h5t

from common.errors import UserError, first_line


class MatStruct:
    """One struct variable of a .mat file; its fields by name."""

    def __init__(self, path: Path, variable: str, fields: dict):
        self.path, self.variable, self._fields = path, variable, fields

    @property
    def field_names(self) -> list[str]:
        return list(self._fields)

    def field(self, name: str):
        if name not in self._fields:
            raise UserError(
                f"{self.path}: struct {self.variable} has no field {name!r} "
                f"(fields: {', '.join(self._fields) or 'none'})"
            )
        return self._fields[name]

    def numbers(self, name: str) -> np.ndarray:
        """A numeric field as a flat float64 vector (MATLAB's column or row vector alike)."""
        value = self.field(name)
        if isinstance(value, _H5Field):
            value = value.numbers()
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            raise UserError(f"{self.path}: field {self.variable}.{name} should be numeric, found {_describe(value)}")
        return value.astype(np.float64, copy=False).ravel(order="F")

    def strings(self, name: str) -> pa.Array:
        """A cell array of strings (or a char matrix) as strings, one per element."""
        value = self.field(name)
        if isinstance(value, _H5Field):
            return pa.array(value.strings(), pa.string())
        if isinstance(value, np.ndarray) and value.dtype.kind == "U":  # a char matrix: one padded row each
            return pa.array([s.rstrip() for s in value.ravel().tolist()], pa.string())
        if not isinstance(value, np.ndarray) or value.dtype != object:
            raise UserError(
                f"{self.path}: field {self.variable}.{name} should be a cell array of strings, found {_describe(value)}"
            )
        return _cell_strings(value.ravel(order="F"))


def _describe(value) -> str:
    return f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__


def _cell_strings(cells: np.ndarray) -> pa.Array:
    """Cells holding one string each are joined in C; only the odd ones (empty, not text) one by one."""
    simple = np.frompyfunc(_is_one_string, 1, 1)(cells).astype(bool)
    strings = np.empty(len(cells), dtype=object)
    if simple.any():
        strings[simple] = np.concatenate(cells[simple]).astype(object)
    strings[~simple] = [_cell_string(cell) for cell in cells[~simple]]
    return pa.array(strings, pa.string())


def _is_one_string(cell) -> bool:
    return isinstance(cell, np.ndarray) and cell.dtype.kind == "U" and cell.size == 1


def _cell_string(cell) -> str | None:
    if isinstance(cell, str):
        return cell
    if isinstance(cell, np.ndarray) and cell.dtype.kind == "U":
        return "" if cell.size == 0 else cell.item() if cell.size == 1 else None
    return None


def is_v73(path: Path) -> bool:
    """True for a MATLAB v7.3 file (HDF5, possibly behind MATLAB's 512-byte header)."""
    try:
        return bool(h5py.is_hdf5(str(path)))
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e})") from None


@contextlib.contextmanager
def read_struct(path: Path, variable: str) -> Iterator[MatStruct]:
    """The struct `variable` of a .mat file (v5/v7 or v7.3), with its fields readable by name."""
    path = Path(path)
    if is_v73(path):
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise UserError(f"{path}: not a readable MATLAB v7.3 (HDF5) file ({first_line(e)})") from None
        with f:
            group = f.get(variable)
            if not isinstance(group, h5py.Group) or variable.startswith("#"):
                raise UserError(
                    f"{path}: expected a struct variable {variable!r} (MATLAB v7.3), "
                    f"found variables: {', '.join(k for k in f if not k.startswith('#')) or 'none'}"
                )
            yield MatStruct(path, variable, {name: _H5Field(f, group[name]) for name in group})
        return
    yield MatStruct(path, variable, _loadmat_struct(path, variable))


def _loadmat_struct(path: Path, variable: str) -> dict:
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path), variable_names=[variable])
    except (ValueError, TypeError, OSError, scipy.io.matlab.MatReadError) as e:
        raise UserError(f"{path}: not a readable MATLAB .mat file ({e})") from None
    value = data.get(variable)
    if value is None:
        found = [name for name, _, _ in scipy.io.whosmat(str(path))]
        raise UserError(
            f"{path}: expected a struct variable {variable!r}, found variables: {', '.join(found) or 'none'}"
        )
    if not isinstance(value, np.ndarray) or value.dtype.names is None or value.size != 1:
        raise UserError(f"{path}: variable {variable!r} should be a 1x1 struct of columns, found {_describe(value)}")
    record = value.ravel()[0]
    return {name: record[name] for name in value.dtype.names}


class _H5Field:
    """A v7.3 struct field, read only when asked for (a struct may hold GBs of features)."""

    def __init__(self, file, dataset):
        self.file, self.dataset = file, dataset

    def _class(self, obj) -> str:
        raw = obj.attrs.get("MATLAB_class", b"")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def numbers(self):
        if "MATLAB_empty" in self.dataset.attrs:
            return np.zeros(0)
        if self._class(self.dataset) in ("cell", "char", "struct") or self.dataset.dtype.kind not in "biuf":
            return self.dataset  # not numeric: MatStruct.numbers names it in the error
        return np.asarray(self._read(self.dataset)).T  # HDF5 holds MATLAB arrays transposed

    def strings(self) -> list[str | None]:
        if self._class(self.dataset) == "char":
            return _char_rows(self.dataset)
        if self.dataset.dtype.kind != "O":
            raise UserError(
                f"{self.file.filename}: field {self.dataset.name} should be a cell array of strings, "
                f"found {self.dataset.dtype} of shape {self.dataset.shape}"
            )
        file_id = self.file.id
        refs = np.asarray(self._read(self.dataset)).T.ravel()
        try:
            return [self._deref_string(file_id, ref) for ref in refs]
        except (OSError, ValueError) as e:
            raise UserError(
                f"{self.file.filename}: field {self.dataset.name} cannot be read ({first_line(e)})"
            ) from None

    def _read(self, dataset):
        """A dataset's values; a corrupt file is a user error naming it."""
        try:
            return dataset[()]
        except (OSError, ValueError) as e:
            raise UserError(f"{self.file.filename}: field {dataset.name} cannot be read ({first_line(e)})") from None

    def _deref_string(self, file_id, ref) -> str | None:
        target = h5r.dereference(ref, file_id)  # the low-level calls are ~2x faster than file[ref]
        if not isinstance(target, h5d.DatasetID):
            return None
        kind = target.get_type()
        if kind.get_class() == h5t.INTEGER and kind.get_size() == 2 and len(target.shape) == 2 and target.shape[1] == 1:
            codes = np.empty(target.shape, "<u2")  # the usual 1 x L MATLAB string, stored L x 1
            target.read(h5s.ALL, h5s.ALL, codes)
            return codes.tobytes().decode("utf-16-le", errors="replace")
        dataset = h5py.Dataset(target)  # an odd cell: let its attributes say what it is
        if "MATLAB_empty" in dataset.attrs:
            return ""
        rows = _char_rows(dataset) if self._class(dataset) == "char" else []
        return rows[0] if len(rows) == 1 else None


def _char_rows(dataset) -> list[str]:
    """A MATLAB char matrix (stored transposed as uint16 UTF-16 code units) as one string per row."""
    codes = np.asarray(dataset[()], dtype="<u2").T
    codes = codes.reshape(1, -1) if codes.ndim < 2 else codes
    return [row.tobytes().decode("utf-16-le", errors="replace").rstrip("\x00 ") for row in codes]
