"""A restricted unpickler for annotation pickles (`filenames.pickle`, ...).

A pickle can run any code when loaded. These files only ever hold lists, tuples, dicts, strings,
bytes and numbers, so every global lookup is refused: a malicious pickle raises instead of running.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from common.errors import UserError


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only lists, strings and numbers are allowed")


def load_data_pickle(path: Path):
    """Load a pickle of plain data (Python 2 pickles included: bytes decode as latin-1)."""
    try:
        return _DataOnly(io.BytesIO(Path(path).read_bytes()), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: not a plain-data pickle ({e})") from None
    except (EOFError, ValueError, IndexError, KeyError, TypeError) as e:
        raise UserError(f"{path}: unreadable pickle ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def as_names(data, path: Path) -> list[str]:
    """A pickled list of file names (str or bytes) as a list of str."""
    if not isinstance(data, (list, tuple)):
        raise UserError(f"{path}: expected a pickled list of file names, found {type(data).__name__}")
    names = []
    for item in data:
        if isinstance(item, bytes):
            item = item.decode("utf-8", errors="replace")
        if not isinstance(item, str):
            raise UserError(f"{path}: expected file names (strings), found {type(item).__name__}")
        names.append(item)
    return names
