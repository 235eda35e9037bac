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
    batch_size: int | None = None  # None = what fits the device (`default_batch_size`)
    loader_workers: int | None = None  # decoding processes per encoder; None = `default_loader_workers`
    precision: str = "fp32"  # or bf16 (convolutions only; the nearest-code search stays fp32)
    shard_size: int = 2000  # faces per shard
    num_nodes: int = 1  # machines sharing the work, each a static block of shards
    node_rank: int = 0
    shard_range: tuple[int, int] | None = None  # an explicit block of shards instead of num_nodes/node_rank

    def __post_init__(self):
        if self.batch_size is None:
            object.__setattr__(self, "batch_size", default_batch_size(self.gpus))
        if self.loader_workers is None:
            object.__setattr__(self, "loader_workers", default_loader_workers(self.gpus))
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.batch_size < 1 or self.shard_size < 1 or self.loader_workers < 0:
            raise UserError("--batch-size and --shard-size must be >= 1, --loader-workers >= 0")


GPU_BATCH = 64
CPU_BATCH_PER_CORE, CPU_BATCH_RANGE = 4, (4, 16)


def default_batch_size(gpus: int) -> int:
    """64 faces on a GPU; on the CPU 4 per core of an encoder process, 4 to 16.

    A CPU encoder gains nothing from a larger batch once every core has work, while each of its activations
    grows with it (134 MB per tensor at 16 faces for the FFHQ encoder, 537 MB at 64)."""
    if encodes_on_gpu(gpus):
        return GPU_BATCH
    low, high = CPU_BATCH_RANGE
    return min(high, max(low, CPU_BATCH_PER_CORE * cpu_cores() // max(gpus, 1)))


def default_loader_workers(gpus: int) -> int:
    """Decoding processes per encoder: on a GPU the cores left after one per encoder process (at least 1);
    none on the CPU, where decoding a face costs well under 1% of encoding it and a loader process would
    take cores from the encoder's threads (and cost its start-up on small inputs)."""
    if not encodes_on_gpu(gpus):
        return 0
    return max(1, cpu_cores() // max(gpus, 1) - 1)


def encodes_on_gpu(gpus: int) -> bool:
    """Whether the encoders will run on CUDA devices (`--gpus 0` or no CUDA: the CPU)."""
    if gpus <= 0:
        return False
    import torch

    return torch.cuda.is_available()


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
