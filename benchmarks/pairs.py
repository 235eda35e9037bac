"""Side-by-side timing for the benchmarks: interleaved pairs, median ratio with min-max, the machine's load.

    ratios = interleaved(ours, peer, pairs=5)      # each a function returning the seconds of one run
    print(ratio_line("forward+backward", ratios, goal=1.05))

Each pair runs both sides back to back, in alternating order, so that a busy neighbour slows both alike;
the ratio of a pair is the peer's seconds over ours (above 1: we are faster).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def interleaved(ours: Callable[[], float], peer: Callable[[], float], pairs: int) -> list[tuple[float, float]]:
    """(our seconds, the peer's seconds) for each pair; even pairs run ours first, odd pairs the peer first."""
    results = []
    for i in range(pairs):
        if i % 2 == 0:
            mine = ours()
            theirs = peer()
        else:
            theirs = peer()
            mine = ours()
        results.append((mine, theirs))
    return results


def ratio_line(what: str, pairs: list[tuple[float, float]], goal: float | None = None) -> str:
    ratios = sorted(theirs / mine for mine, theirs in pairs)
    ours = statistics.median(m for m, _ in pairs)
    peer = statistics.median(t for _, t in pairs)
    verdict = (
        "" if goal is None else f"  goal >= {goal:.2f}x: {'met' if statistics.median(ratios) >= goal else 'NOT met'}"
    )
    return (
        f"  {what}: ours {ours:.3f} s, peer {peer:.3f} s (medians); ratio {statistics.median(ratios):.2f}x "
        f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f}, {len(ratios)} pairs){verdict}  [load {load_average()}]"
    )


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def timed(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one call by `clock`: wall time, or `time.process_time` (CPU seconds of every thread of this
    process: steadier on a loaded machine with one torch thread, where waiting for a core is not counted)."""
    start = clock()
    fn()
    return clock() - start
