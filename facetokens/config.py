"""The settings of `tokenize-images` (light to import: the CLI reads its defaults from here)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from common.errors import UserError

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TokenizeConfig:
    """The settings of one `tokenize-images` run on one machine (the only place their defaults are written)."""

    gpus: int = 1  # encoder processes, one per GPU; 0 = one CPU process
    batch_size: int = 64
    loader_workers: int | None = None  # decoding processes per encoder; None = the cores left over
    precision: str = "fp32"  # or bf16 (convolutions only; the nearest-code search stays fp32)
    shard_size: int = 2000  # faces per shard
    num_nodes: int = 1  # machines sharing the work, each a static block of shards
    node_rank: int = 0
    shard_range: tuple[int, int] | None = None  # an explicit block of shards instead of num_nodes/node_rank

    def __post_init__(self):
        if self.loader_workers is None:
            object.__setattr__(self, "loader_workers", default_loader_workers(self.gpus))
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.batch_size < 1 or self.shard_size < 1 or self.loader_workers < 0:
            raise UserError("--batch-size and --shard-size must be >= 1, --loader-workers >= 0")


def default_loader_workers(gpus: int) -> int:
    """Decoding processes per encoder: the cores left after one per encoder process (at least 1)."""
    return max(1, cpu_cores() // max(gpus, 1) - 1)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
