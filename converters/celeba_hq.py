"""CelebA-HQ -> CelebA: CelebAMask-HQ's `CelebA-HQ-to-CelebA-mapping.txt` (`idx orig_idx orig_file`).

The CelebA-family datasets share faces through it; converters record `origin_id = celeba/NNNNNN`
for each CelebA-HQ face so that build-corpus can keep the splits leak-free.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from common.errors import UserError

from .rows import prefixed, stems
from .tables import read_table, read_text

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
