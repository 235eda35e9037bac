"""Deterministic splits for datasets without an official one: by person where known, else by face.

Every row of one key (person, or image_id where no person is known) lands in the same split, so
no person is in both train and test. The assignment depends only on the key, the ratios and the
seed: not on row order, the machine or the Python hash seed.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .records import DEFAULT_RATIOS, DEFAULT_SEED, SPLITS


def hash_split(keys: pa.Array, ratios=DEFAULT_RATIOS, seed: str = DEFAULT_SEED) -> pa.Array:
    """`train`/`val`/`test` per key, chosen by a stable hash of `seed/key` against the ratios."""
    if len(ratios) != 3 or min(ratios) < 0 or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    unique = pc.unique(keys)
    fractions = np.array([zlib.crc32(f"{seed}/{k}".encode()) / 2**32 for k in unique.to_pylist()])
    bounds = np.cumsum(ratios)[:2]
    choice = np.searchsorted(bounds, fractions, side="right")
    per_key = pa.array(np.array(SPLITS, dtype=object)[choice].tolist(), pa.string())
    return per_key.take(pc.index_in(keys, value_set=unique))
