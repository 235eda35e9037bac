"""Columnar builders for converted records: key-value texts, attribute lists, boxes, sources.

Converters work on whole columns (pyarrow arrays) rather than row by row, which keeps a
200k-row dataset within a small multiple of the time it takes just to parse its annotation file.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import ATTRIBUTE_TYPE, BOX_TYPE, RECORD_SCHEMA


def key_name(raw: str) -> str:
    """An annotation's label name as a lower-case phrase: `Oval_Face` -> `oval face`."""
    return re.sub(r"[\s_]+", " ", raw).strip().lower()


def normalise_text(values: pa.Array) -> pa.Array:
    """Collapse every run of whitespace to one space and trim the ends."""
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(values, r"\s+", " "))


def map_values(codes: pa.Array, mapping: dict) -> pa.Array:
    """Map label codes (strings) to their names; codes absent from `mapping` become null."""
    keys = pa.array([str(k) for k in mapping], pa.string())
    names = pa.array([str(v) for v in mapping.values()], pa.string())
    return names.take(pc.index_in(codes, value_set=keys))


def attribute_columns(dataset: str, keys: Sequence[str], values: Sequence[pa.Array]) -> tuple[pa.Array, pa.Array]:
    """`dataset key: value; key: value` texts and the matching list<struct<key, value>> column.

    A null value leaves its pair out of that row's text and list.
    """
    n = len(values[0])
    k = len(keys)
    values = [pa.array(v, pa.string()) if not isinstance(v, pa.Array) else v.cast(pa.string()) for v in values]
    pairs = [pc.binary_join_element_wise(pa.scalar(key), value, ": ") for key, value in zip(keys, values)]
    joined = pc.binary_join_element_wise(*pairs, "; ", null_handling="skip") if k > 1 else pc.fill_null(pairs[0], "")
    text = pc.binary_join_element_wise(pa.scalar(dataset), joined, " ")
    row_major = (np.arange(k)[None, :] * n + np.arange(n)[:, None]).ravel()
    flat = pa.concat_arrays([v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v for v in values]).take(row_major)
    flat_keys = pa.array(list(keys), pa.string()).take(pa.array(np.tile(np.arange(k), n)))
    valid = flat.is_valid().to_numpy(zero_copy_only=False)
    counts = valid.reshape(n, k).sum(axis=1) if n else np.zeros(0, dtype=np.int64)
    if not valid.all():
        flat, flat_keys = flat.filter(pa.array(valid)), flat_keys.filter(pa.array(valid))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    structs = pa.StructArray.from_arrays([flat_keys, flat], names=["key", "value"])
    return text, pa.ListArray.from_arrays(offsets, structs).cast(ATTRIBUTE_TYPE)


def box_column(boxes: np.ndarray | None, n: int) -> pa.Array:
    """An (n, 4) integer array of [left, top, right, bottom] boxes (rows of -1 = no box) as list<int32>."""
    if boxes is None:
        return pa.nulls(n, BOX_TYPE)
    boxes = np.asarray(boxes, dtype=np.int32).reshape(-1, 4)
    mask = pa.array((boxes < 0).all(axis=1))
    offsets = pa.array(np.arange(0, 4 * len(boxes) + 1, 4, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(boxes.ravel()), mask=mask).cast(BOX_TYPE)


def prefixed(prefix: str, values: pa.Array) -> pa.Array:
    """`prefix + value` for each value (image ids such as `celeba/000001`)."""
    return pc.binary_join_element_wise(pa.scalar(prefix), pa.array(values, pa.string()) if not isinstance(values, pa.Array) else values, "")


def make_table(n: int, **columns) -> pa.Table:
    """A table of RECORD_SCHEMA from columns; a scalar (or None) is repeated n times."""
    arrays = []
    for field in RECORD_SCHEMA:
        value = columns.pop(field.name, None)
        if value is None:
            arrays.append(pa.nulls(n, field.type))
        elif isinstance(value, str):
            arrays.append(pa.array([value], field.type).take(pa.array(np.zeros(n, dtype=np.int64))))
        else:
            arr = value if isinstance(value, (pa.Array, pa.ChunkedArray)) else pa.array(value, field.type)
            arrays.append(arr.cast(field.type))
    if columns:
        raise TypeError(f"unknown record columns: {sorted(columns)}")
    return pa.Table.from_arrays(arrays, schema=RECORD_SCHEMA)


def stems(names: pa.Array) -> pa.Array:
    """File names without their extension (`000001.jpg` -> `000001`)."""
    return pc.replace_substring_regex(names, r"\.[^./]*$", "")


def later_duplicates(values: pa.Array) -> np.ndarray:
    """True for every repeat of a value already seen earlier in the column (the first one is kept)."""
    indices = pc.index_in(values, value_set=pc.unique(values)).to_numpy(zero_copy_only=False)
    seen_first = np.zeros(len(values), dtype=bool)
    _, first_pos = np.unique(indices, return_index=True)
    seen_first[first_pos] = True
    return ~seen_first
