"""Single-value .npy files (AffectNet's npy release holds one 0-d array per image and annotation)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def read_npy_scalars(folder: Path, names: list[str], present: frozenset) -> tuple[list, list]:
    """The value (as text) of each single-value .npy file (None where absent) and a problem per file ("" = none).

    Only plain dtypes are accepted, as with np.load(allow_pickle=False); each distinct header is parsed
    once by numpy, then the files sharing it are decoded from their bytes (np.load costs ~100 us a file).
    """
    dtypes: dict[bytes, np.dtype] = {}
    values, problems = [], []
    for name in names:
        value, problem = None, ""
        if name in present:
            try:
                with open(os.path.join(folder, name), "rb", buffering=0) as f:  # no pathlib: ~300k files
                    value = npy_scalar(f.readall(), dtypes)
            except (OSError, ValueError, EOFError) as e:
                problem = f"{name}: {e}"
        values.append(value)
        problems.append(problem)
    return values, problems


def npy_scalar(data: bytes, dtypes: dict) -> str:
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise ValueError("not a .npy file")
    size = 2 if data[6] == 1 else 4
    end = 8 + size + int.from_bytes(data[8 : 8 + size], "little")
    header = data[:end]
    if header not in dtypes:
        array = np.load(io.BytesIO(data), allow_pickle=False)
        if array.size != 1:
            raise ValueError(f"expected a single value, found shape {array.shape}")
        dtypes[header] = array.dtype
    value = np.frombuffer(data, dtypes[header], count=1, offset=end)[0].item()
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
