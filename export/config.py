"""The settings of one `export` run (light to import: the CLI reads its choices from here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import converters
from common.errors import UserError
from common.records import SPLITS
from facetokens.config import cpu_cores

from . import FORMATS

SIZES = (256, 512, 1024)
ATTRIBUTE_TEXTS = ("keyvalue", "sentence")


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how; everything except `workers` decides the output (recorded with it)."""

    format: str
    splits: tuple[str, ...] = SPLITS
    datasets: tuple[str, ...] | None = None  # None: every dataset
    size: int = 256  # side of the square face, as tokenize-images crops it
    link: bool = False  # symbolic links to the source files instead of cropped faces
    attribute_text: str = "keyvalue"  # attribute pairs as their key-value text or as one sentence
    pairs_per_unit: int = 1000  # pairs per resumable unit (a webdataset shard)
    workers: int | None = None  # processes reading faces; None = the CPU cores

    def __post_init__(self):
        if self.format not in FORMATS:
            raise UserError(f"--format {self.format!r}: expected one of {', '.join(FORMATS)}")
        unknown = [s for s in self.splits if s not in SPLITS] + [
            d for d in self.datasets or () if d not in converters.DATASETS
        ]
        if unknown:
            raise UserError(
                f"unknown split or dataset name(s): {', '.join(unknown)} (splits: {', '.join(SPLITS)}; "
                f"datasets: {', '.join(converters.DATASETS)})"
            )
        if self.size not in SIZES or self.attribute_text not in ATTRIBUTE_TEXTS:
            raise UserError(f"--size must be one of {SIZES} and --attribute-text one of {', '.join(ATTRIBUTE_TEXTS)}")
        if self.pairs_per_unit < 1:
            raise UserError("pairs_per_unit must be >= 1")
        if self.workers is None:
            object.__setattr__(self, "workers", cpu_cores())
        if self.workers < 1:
            raise UserError("--workers must be >= 1")

    def recorded(self) -> dict:
        """The settings the output depends on (a resumed export must use the same)."""
        settings = asdict(self)
        settings.pop("workers")
        return {**settings, "splits": list(self.splits), "datasets": list(self.datasets) if self.datasets else None}
