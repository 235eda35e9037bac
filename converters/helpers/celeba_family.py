"""The lists the CelebA-family datasets share (CelebA, CelebA-Dialog and the CelebA-HQ caption sets).

- CelebA's `list_eval_partition` (official text or Kaggle CSV): each image's split.
- CelebA-HQ -> CelebA: CelebAMask-HQ's `CelebA-HQ-to-CelebA-mapping.txt` (`idx orig_idx orig_file`).
  The CelebA-family datasets share faces through it; converters record `origin_id = celeba/NNNNNN`
  for each CelebA-HQ face so that build-corpus can keep the splits leak-free.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from common.errors import UserError

from .rows import map_values, prefixed, stems
from .tables import read_csv, read_table, read_text

PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"
HEADER = ["idx", "orig_idx", "orig_file"]


def read_mapping(path: Path) -> dict[str, pa.Array]:
    """{'hq': CelebA-HQ indices as strings, 'celeba': matching `celeba/NNNNNN` ids}."""
    first = next((line for line in read_text(path).splitlines() if line.strip()), "")
    if first.split() != HEADER:
        raise UserError(f"{path}:1: expected the header 'idx orig_idx orig_file', found {first.strip()!r}")

    def bad_line(source, reason, detail):
        raise UserError(f"{source}: {reason}, {detail}")

    table = read_table(path, path.name, HEADER, bad_line, skip_lines=1)
    return {"hq": table["idx"], "celeba": prefixed("celeba/", stems(table["orig_file"]))}


def origin_ids(hq_indices: pa.Array, mapping: dict[str, pa.Array] | None) -> pa.Array | None:
    """The CelebA image id behind each CelebA-HQ index (null where the mapping lacks it)."""
    if mapping is None:
        return None
    return mapping["celeba"].take(pc.index_in(hq_indices, value_set=mapping["hq"]))


def read_partition(path: Path, rel: str, codes: dict) -> tuple[pa.Array, pa.Array]:
    """`list_eval_partition` (official text or Kaggle CSV): image file names and their splits.

    Partition lines are not records: a malformed one, or an unknown code (null split), just leaves
    its image without a split, which the converter reports.
    """

    def ignore(*_):
        pass

    if path.suffix.lower() == ".csv":
        table = read_csv(path, rel, ["image_id", "partition"], ignore)
    else:
        table = read_table(path, rel, ["image_id", "partition"], ignore)
    return table["image_id"], map_values(table["partition"], codes)
