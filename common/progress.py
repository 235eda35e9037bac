"""Progress for long loops: a tqdm bar on a terminal, plain lines (about every 10%) otherwise.

    with progress(total=1000, desc="generate", unit="face") as bar:
        for batch in batches:
            ...
            bar.update(len(batch))

Plain lines go to stderr so that a command's printed summary stays clean on stdout; `quiet=True` shows nothing.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


class _Lines:
    """tqdm's `update` for a log file or a pipe: one line per tenth of the work (and at the end)."""

    def __init__(self, total: int, desc: str, unit: str, stream):
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.done, self.next_mark, self.start = 0, max(1, total // 10), time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self.next_mark or self.done >= self.total:
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s ({rate:.1f} {self.unit}/s)",
                  file=self.stream, flush=True)
            while self.next_mark <= self.done:
                self.next_mark += max(1, self.total // 10)


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def progress(total: int, desc: str, unit: str = "item", quiet: bool = False, stream=None) -> Iterator:
    stream = stream or sys.stderr
    if quiet or total <= 0:
        yield _Silent()
    elif stream.isatty():
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True) as bar:
            yield bar
    else:
        yield _Lines(total, desc, unit, stream)
