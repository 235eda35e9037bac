"""Columnar builders for converted records: key-value texts, attribute lists, boxes, sources.

Converters work on whole columns (pyarrow arrays) rather than row by row, which keeps a
200k-row dataset within a small multiple of the time it takes just to parse its annotation file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.splits import hash_split

from .schema import ATTRIBUTE_TYPE, BOX_TYPE, RECORD_SCHEMA

NUMBER_TEXT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"  # a plain decimal number as a text field holds one


def key_name(raw: str) -> str:
    """An annotation's label name as a lower-case phrase: `Oval_Face` -> `oval face`."""
    return re.sub(r"[\s_]+", " ", raw).strip().lower()


def map_values(codes: pa.Array, mapping: dict) -> pa.Array:
    """Map label codes (strings) to their names; codes absent from `mapping` become null."""
    if isinstance(codes, pa.DictionaryArray):  # map each distinct value once
        return pa.DictionaryArray.from_arrays(codes.indices, map_values(codes.dictionary, mapping))
    keys = pa.array([str(k) for k in mapping], pa.string())
    names = pa.array([str(v) for v in mapping.values()], pa.string())
    return names.take(pc.index_in(codes, value_set=keys))


def attribute_columns(dataset: str, keys: Sequence[str], values: Sequence[pa.Array]) -> tuple[pa.Array, pa.Array]:
    """`dataset key: value; key: value` texts and the matching list<struct<key, value>> column.

    A null value leaves its pair out of that row's text and list. Label values repeat a lot, so
    each column is dictionary-encoded and every row is assembled from codes into one small
    vocabulary of (key, value, "key: value") entries: no per-pair string work per row.
    """
    n, k = len(values[0]), len(keys)
    codes = np.empty((n, k), dtype=np.int64)
    vocab_keys: list[str] = []
    vocab_values: list[str] = []
    for j, (key, column) in enumerate(zip(keys, values)):
        column = column if isinstance(column, (pa.Array, pa.ChunkedArray)) else pa.array(column, pa.string())
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        encoded = column if isinstance(column, pa.DictionaryArray) else pc.dictionary_encode(column.cast(pa.string()))
        encoded = pa.DictionaryArray.from_arrays(encoded.indices, encoded.dictionary.cast(pa.string()))
        indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        codes[:, j] = np.where(indices >= 0, indices + len(vocab_values), -1)
        vocab_values += encoded.dictionary.to_pylist()
        vocab_keys += [key] * len(encoded.dictionary)
    present = codes >= 0
    flat = pa.array(codes[present])  # row-major: each row's pairs in key order
    offsets = pa.array(np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32))
    pairs = [f"{key}: {value}" for key, value in zip(vocab_keys, vocab_values)]
    first_always_present = n == 0 or bool(present[:, 0].all())
    if first_always_present:  # every row starts with a pair of the first key: the dataset name goes there
        pairs = [f"{dataset} {p}" if key == keys[0] else p for key, p in zip(vocab_keys, pairs)]
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, pa.array(pairs, pa.string()).take(flat)), "; ")
    text = joined if first_always_present else pc.binary_join_element_wise(pa.scalar(dataset), joined, " ")
    structs = pa.StructArray.from_arrays(
        [pa.array(vocab_keys, pa.string()).take(flat), pa.array(vocab_values, pa.string()).take(flat)],
        names=["key", "value"],
    )
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
    return pc.binary_join_element_wise(
        pa.scalar(prefix), pa.array(values, pa.string()) if not isinstance(values, pa.Array) else values, ""
    )


def person_split_attributes(dataset: str, image, image_id, text, attributes, source, person) -> pa.Table:
    """Attribute records of a dataset without an official split: split by person where known, else by image."""
    return make_table(
        len(image_id),
        dataset=dataset,
        image=image,
        image_id=image_id,
        split=hash_split(pc.coalesce(person, image_id)),
        kind="attributes",
        text=text,
        attributes=attributes,
        source=source,
        person=person,
    )


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
    if len(names) and pc.all(pc.ends_with(names, ".jpg")).as_py():  # the usual case: a slice, not a regex
        return pc.utf8_slice_codeunits(names, 0, -4)
    return pc.replace_substring_regex(names, r"\.[^./]*$", "")
