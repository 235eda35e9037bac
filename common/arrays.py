"""Arrow/numpy helpers shared by the stages: codes, duplicates, whitespace normalisation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def to_numpy(values) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.to_numpy(zero_copy_only=False)


def encode(values) -> tuple[np.ndarray, pa.Array]:
    """Integer codes per value (first appearance order) and the distinct values."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        if encoded.num_chunks == 0:
            return np.zeros(0, np.int64), pa.array([], values.type)
        indices = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks])
        return indices.astype(np.int64), encoded.chunk(encoded.num_chunks - 1).dictionary
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def normalise_text(values: pa.Array) -> pa.Array:
    """Collapse every run of whitespace to one space and trim the ends.

    Only the texts that need it are rewritten (a regex pass over every space of 300k captions costs
    seconds); when none does, the input comes back as it is, without a copy.
    """
    needs = pc.fill_null(pc.match_substring_regex(values, NEEDS_NORMALISING), False)
    if not pc.any(needs).as_py():
        return values
    changed = pc.utf8_trim_whitespace(pc.replace_substring_regex(values.filter(needs), INNER_WHITESPACE, " "))
    return pc.replace_with_mask(values, needs, changed)


# What utf8_trim_whitespace trims (Unicode White_Space); a text needs normalising only if it starts
# or ends with one of these, or holds a tab/newline/VT/FF/CR or two whitespace characters in a row.
TRIMMED = r"[\x{09}-\x{0D}\x{1C}-\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]"
NEEDS_NORMALISING = rf"[\t\n\v\f\r]|\s{{2}}|^{TRIMMED}|{TRIMMED}$"
INNER_WHITESPACE = r"\s{2,}|[\t\n\f\r\v]"


def first_positions(values: pa.Array) -> np.ndarray:
    """For each row, the position of the first row holding the same value."""
    codes = pc.index_in(values, value_set=pc.unique(values)).to_numpy(zero_copy_only=False)
    _, first_of_code = np.unique(codes, return_index=True)  # codes are 0..k-1, all present
    return first_of_code[codes]


def later_duplicates(values: pa.Array) -> np.ndarray:
    """True for every repeat of a value already seen earlier in the column (the first one is kept)."""
    return first_positions(values) != np.arange(len(values))
