"""Progress for long commands: a tqdm bar on a terminal, plain lines where the output is a file or a pipe.

    with Progress(total=7, desc="build-corpus", unit="stage") as progress:
        progress.update(1, "read")

A bar's `\r` redraws make a log file or a CI console unreadable, so when stderr is not a terminal each
update is one line (`build-corpus: 2/7 stages (clean)`), at most one every `every` seconds and always
the last one. Lines go to stderr so that a command's printed summary stays clean on stdout.
`enabled=False` (library callers, tests, `quiet`) or nothing to count (`total` 0) shows nothing.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, desc: str, unit: str, *, enabled: bool = True, every: float = 10.0):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.done, self.last_line = 0, float("-inf")
        enabled = enabled and total > 0
        self.plain = enabled and not sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled or self.plain, dynamic_ncols=True)

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.bar.update(n)
        if note:
            self.bar.set_postfix_str(note, refresh=False)
        now = time.monotonic()
        if self.plain and (now - self.last_line >= self.every or self.done >= self.total):
            self.last_line = now
            detail = f" ({note})" if note else ""
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s{detail}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
