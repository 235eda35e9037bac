"""Text hygiene for the corpus: whitespace normalised, empty texts rejected, exact duplicate pairs removed.

A pair is an exact duplicate of an earlier one when `image_id`, `kind` and the normalised `text`
are all equal (also across datasets: MM-CelebA-HQ and CelebA-Text-HQ caption the same CelebA-HQ
images). The first pair in corpus order (datasets in registry order, then converted row order) is
kept. Texts are compared by integer codes (one dictionary encoding), never row by row in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.arrays import encode, normalise_text, to_numpy
from common.records import KINDS

EMPTY_TEXT = "empty text"
DUPLICATE_PAIR = "duplicate pair"

# WordPiece-like length without a tokenizer model: each run of ASCII letters is one token, each
# digit one token (the paper splits numbers into digits), each other non-space character one token
# (the regex TOKEN_PATTERN, counted over the UTF-8 bytes with numpy: a regex pass is 20x slower).
# A real WordPiece vocabulary splits some long or rare words further, so this is a lower bound.
TOKEN_PATTERN = r"[A-Za-z]+|[0-9]|[^\sA-Za-z0-9]"
TOKEN_METHOD = (
    "approximate WordPiece length: runs of ASCII letters, single digits and single other "
    "non-space characters each count as one token (no tokenizer model is available offline)"
)
_LETTER, _DIGIT, _OTHER, _NONE = 1, 2, 3, 0
_BYTE_CLASS = np.full(256, _OTHER, dtype=np.uint8)  # ASCII punctuation and UTF-8 lead bytes: one character each
_BYTE_CLASS[[9, 10, 11, 12, 13, 32]] = _NONE  # ASCII whitespace
_BYTE_CLASS[0x80:0xC0] = _NONE  # UTF-8 continuation bytes belong to the character before them
_BYTE_CLASS[np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8)] = _LETTER
_BYTE_CLASS[np.frombuffer(b"0123456789", np.uint8)] = _DIGIT
_TOKEN_WINDOW = 65_536  # texts per numpy pass (bounds the temporary arrays)


@dataclass
class Hygiene:
    text: pa.ChunkedArray  # the normalised text of every row
    normalised: int  # rows whose text changed when normalising whitespace
    empty: np.ndarray  # bool per row: empty after normalising (rejected)
    duplicate: np.ndarray  # bool per row: repeats an earlier pair (removed)
    duplicate_rows: np.ndarray  # row index of each duplicate, ascending
    kept_instead: np.ndarray  # for each duplicate row, the row that was kept

    @property
    def kept(self) -> np.ndarray:
        return ~(self.empty | self.duplicate)


def clean_texts(table: pa.Table, image_codes: np.ndarray) -> Hygiene:
    """Normalise every text, mark empty ones and exact duplicate pairs; `image_codes` encode `image_id`."""
    text, normalised = normalised_texts(table.column("text"))
    empty = to_numpy(pc.equal(pc.utf8_length(text), 0)).astype(bool) if len(text) else np.zeros(0, bool)
    kind_codes = to_numpy(pc.index_in(table.column("kind"), value_set=pa.array(KINDS))).astype(np.int64)
    duplicate_rows, kept_instead = exact_duplicates(image_codes, kind_codes, text, ~empty)
    duplicate = np.zeros(len(empty), dtype=bool)
    duplicate[duplicate_rows] = True
    return Hygiene(text, normalised, empty, duplicate, duplicate_rows, kept_instead)


def normalised_texts(text: pa.ChunkedArray) -> tuple[pa.ChunkedArray, int]:
    """`common.arrays.normalise_text` of every text (null -> empty), and how many texts it changed."""
    chunks, changed = [], 0
    for chunk in text.chunks:
        before = pc.fill_null(chunk, "")
        after = normalise_text(before)  # runs its regex only on the texts it changes
        changed += int(pc.sum(pc.not_equal(after, before)).as_py() or 0)
        chunks.append(after)
    return pa.chunked_array(chunks, pa.string()), changed


def exact_duplicates(image_codes: np.ndarray, kind_codes: np.ndarray, text, candidates: np.ndarray):
    """Rows among `candidates` whose (image, kind, text) appeared in an earlier row, and that earlier row.

    Only rows whose (image, kind) occurs more than once can repeat a pair, so only their texts are
    encoded (most datasets give one text per image and kind).
    """
    group = image_codes * len(KINDS) + kind_codes
    sizes = np.bincount(group[candidates], minlength=int(group.max(initial=-1)) + 1)
    shared = candidates & (sizes[group] > 1)
    rows = np.flatnonzero(shared)
    if len(rows) == 0:
        return rows, rows
    text_codes, distinct_texts = encode(text.filter(pa.array(shared)))
    key = group[rows] * len(distinct_texts) + text_codes
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)  # first = earliest occurrence
    later = np.ones(len(rows), dtype=bool)
    later[first] = False
    return rows[later], rows[first[inverse[later]]]


def token_lengths(text) -> np.ndarray:
    """Approximate WordPiece token count per text: matches of TOKEN_PATTERN, counted on the bytes."""
    chunks = text.chunks if isinstance(text, pa.ChunkedArray) else [text]
    counts = [
        _window_tokens(chunk.slice(start, _TOKEN_WINDOW))
        for chunk in chunks
        for start in range(0, len(chunk), _TOKEN_WINDOW)
    ]
    return np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)


def _window_tokens(texts: pa.Array) -> np.ndarray:
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset : texts.offset + len(texts) + 1]
    data = texts.buffers()[2]
    first, last = int(offsets[0]), int(offsets[-1])
    byte_class = (
        _BYTE_CLASS[np.frombuffer(data, dtype=np.uint8)[first:last]]
        if data is not None and last > first
        else np.zeros(0, np.uint8)
    )
    letter = byte_class == _LETTER
    starts = byte_class != _NONE
    starts[1:] &= ~(letter[1:] & letter[:-1])  # a letter continuing a letter run starts nothing...
    row_starts = offsets[:-1] - first
    opening = row_starts[row_starts < len(letter)]
    starts[opening] |= letter[opening]  # ...unless it is the first character of a text
    bounds = np.searchsorted(np.flatnonzero(starts), offsets - first)
    return np.diff(bounds).astype(np.int64)
