"""Leak-free splits: one split per face across all datasets, and person splits where there is no official one.

The face key of a row is its `origin_id` (a CelebA-HQ face -> `celeba/NNNNNN`), else the origin that
any dataset gives for the same `image_id`, else the `image_id` itself. CelebA, CelebA-Dialog,
MM-CelebA-HQ and CelebA-Text-HQ thereby share face keys. The rules, in order:

1. A dataset whose manifest says `split: official` keeps its converted split.
2. A dataset whose manifest says `split: none` is split by person (`person`, else the face key):
   a person with a face that rule 1 already places takes the most held-out of those splits (so
   CelebA-Dialog follows CelebA's partition); every other person gets
   `common.splits.hash_split(person, ratios, seed)`. No person straddles splits in such a dataset.
3. Held-out wins: every row of a face takes the most held-out split that any row of the face has
   (test > val > train), so a face that is test or val anywhere is never train anywhere.

Everything is computed on integer codes with numpy: no Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.arrays import encode, later_duplicates, to_numpy
from common.records import SPLITS
from common.splits import hash_split

HELD_OUT_ORDER = SPLITS  # rank = position: train 0 < val 1 < test 2; the higher rank wins a conflict


@dataclass
class SplitResolution:
    converted: np.ndarray  # int8 rank per row, as the converter wrote it
    assigned: np.ndarray  # after rules 1-2
    final: np.ndarray  # after rule 3 (held-out wins)
    face_codes: np.ndarray  # per row: index into face_keys
    face_keys: pa.Array  # the distinct face keys
    resplit_rows: np.ndarray  # bool per row: its dataset is split by person (rule 2)
    origin_conflicts: int  # image ids that datasets give two different origins (the first one is used)

    def final_splits(self) -> pa.Array:
        return split_names(self.final)


def split_names(ranks: np.ndarray) -> pa.Array:
    return pa.array(SPLITS, pa.string()).take(pa.array(ranks.astype(np.int8)))


def split_ranks(splits) -> np.ndarray:
    return to_numpy(pc.index_in(splits, value_set=pa.array(HELD_OUT_ORDER))).astype(np.int8)


def most_held_out(codes: np.ndarray, ranks: np.ndarray, n: int) -> np.ndarray:
    """Per code, the highest rank among its rows (-1 where it has none)."""
    out = np.full(n, -1, dtype=np.int8)
    np.maximum.at(out, codes, ranks.astype(np.int8))
    return out


def face_keys(image_id, origin_id) -> tuple[pa.Array, int]:
    """The face key per row, and how many image ids are given conflicting origins."""
    image_id = _combined(image_id)
    origin_id = _combined(origin_id)
    has_origin = origin_id.is_valid()
    ids, origins = image_id.filter(has_origin), origin_id.filter(has_origin)
    first = pa.array(~later_duplicates(ids)) if len(ids) else pa.array([], pa.bool_())
    first_ids, first_origins = ids.filter(first), origins.filter(first)
    expected = first_origins.take(pc.index_in(ids, value_set=first_ids))
    conflicts = len(pc.unique(ids.filter(pc.not_equal(expected, origins)))) if len(ids) else 0
    known = first_origins.take(pc.index_in(image_id, value_set=first_ids))
    return pc.coalesce(known, image_id), conflicts


def _combined(values):
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def resolve_splits(
    table: pa.Table, dataset_codes: np.ndarray, person_split_datasets: np.ndarray, ratios, seed: str
) -> SplitResolution:
    """Apply rules 1-3 to every row of `table` (RECORD_SCHEMA); `person_split_datasets[code]` marks rule-2 datasets."""
    keys, conflicts = face_keys(table.column("image_id"), table.column("origin_id"))
    face_codes, distinct_faces = encode(keys)
    converted = split_ranks(table.column("split"))
    resplit_rows = person_split_datasets[dataset_codes] if len(dataset_codes) else np.zeros(0, bool)
    assigned = converted.copy()
    if resplit_rows.any():
        persons = pc.coalesce(_combined(table.column("person")), keys).filter(pa.array(resplit_rows))
        assigned[resplit_rows] = _person_splits(
            persons, face_codes, converted, resplit_rows, len(distinct_faces), ratios, seed
        )
    final = most_held_out(face_codes, assigned, len(distinct_faces))[face_codes]
    return SplitResolution(converted, assigned, final, face_codes, distinct_faces, resplit_rows, conflicts)


def _person_splits(
    persons: pa.Array,
    face_codes: np.ndarray,
    converted: np.ndarray,
    resplit_rows: np.ndarray,
    n_faces: int,
    ratios,
    seed: str,
) -> np.ndarray:
    """Rule 2 for the rows of person-split datasets: inherit an official face split, else hash the person."""
    official = ~resplit_rows
    face_official = most_held_out(face_codes[official], converted[official], n_faces)
    person_codes, distinct_persons = encode(persons)
    person_split = most_held_out(person_codes, face_official[face_codes[resplit_rows]], len(distinct_persons))
    unplaced = person_split < 0
    if unplaced.any():
        person_split[unplaced] = split_ranks(hash_split(distinct_persons.filter(pa.array(unplaced)), ratios, seed))
    return person_split[person_codes]


def move_counts(
    dataset_codes: np.ndarray, before: np.ndarray, after: np.ndarray, rows: np.ndarray, names: list[str]
) -> dict[str, dict[str, int]]:
    """Rows (among `rows`) whose split changed, per dataset and `from->to`, e.g. {'celeba': {'train->test': 3}}."""
    moved = rows & (before != after)
    combo = dataset_codes[moved].astype(np.int64) * 9 + before[moved].astype(np.int64) * 3 + after[moved]
    counts = np.bincount(combo, minlength=len(names) * 9).reshape(len(names), 3, 3)
    return {
        name: {f"{SPLITS[a]}->{SPLITS[b]}": int(counts[d, a, b]) for a in range(3) for b in range(3) if counts[d, a, b]}
        for d, name in enumerate(names)
        if counts[d].any()
    }


def persons_in_train_and_test(
    dataset_codes: np.ndarray, person, final: np.ndarray, rows: np.ndarray, names: list[str]
) -> dict[str, int]:
    """Per dataset, persons (non-null `person`) with rows in both train and test, among `rows`."""
    person = _combined(person)
    rows = rows & person.is_valid().to_numpy(zero_copy_only=False)
    if not rows.any():
        return {}
    codes, distinct = encode(person.filter(pa.array(rows)))
    flags = np.zeros((len(names), len(distinct)), dtype=np.uint8)  # bit r: the person has rows of split rank r
    np.bitwise_or.at(flags, (dataset_codes[rows], codes), (1 << final[rows]).astype(np.uint8))
    straddling = ((flags & 0b101) == 0b101).sum(axis=1)
    return {name: int(straddling[d]) for d, name in enumerate(names) if straddling[d]}
