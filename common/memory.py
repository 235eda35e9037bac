"""Peak memory of this process, for benchmarks and stage reports."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's own peak RSS in MiB.

    Linux's VmHWM belongs to the process image; ru_maxrss would carry a parent's larger peak across
    fork and exec, which overstates a benchmark child that a big parent started.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
