"""The settings of `build-corpus` (light to import: the CLI reads its defaults from here)."""

from __future__ import annotations

import dataclasses
import math

from common.errors import UserError
from common.records import DEFAULT_RATIOS, DEFAULT_SEED

PAIRS_PER_FILE = 500_000


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """The settings of one `build-corpus` run (the only place their defaults are written)."""

    split_ratios: tuple[float, float, float] = DEFAULT_RATIOS  # train/val/test for datasets split by person
    seed: str = DEFAULT_SEED  # the hash seed of those splits
    pairs_per_file: int = PAIRS_PER_FILE  # rows per pairs/SPLIT-NNNNN.parquet

    def __post_init__(self):
        object.__setattr__(self, "split_ratios", _checked_ratios(self.split_ratios))
        if self.pairs_per_file < 1:
            raise UserError(f"pairs per file must be at least 1, got {self.pairs_per_file}")


def _checked_ratios(ratios) -> tuple[float, float, float]:
    try:
        ratios = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        raise UserError(f"split ratios must be three numbers (train, val, test), got {ratios!r}") from None
    if len(ratios) != 3 or min(ratios) < 0 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-8):
        raise UserError(
            f"split ratios must be three non-negative numbers (train, val, test) summing to 1, "
            f"got {', '.join(map(str, ratios))}"
        )
    return ratios
