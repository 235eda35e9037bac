"""One writer per output folder: a lock held for the run and released by the kernel when the process dies.

`fcntl.flock` on `FOLDER/.lock`: a second run on the same folder is refused at once with a one-line
`UserError` instead of doing all the work again and racing the first for the last write. The lock
file stays, empty (removing it would let two later runs lock two different files; a pid in it would
make two runs' folders differ).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

LOCK_FILE = ".lock"
_HELD: set[int] = set()  # lock descriptors of this process


def _drop_in_child() -> None:
    # A forked helper (a DataLoader worker) must not keep the run's lock alive after the run dies:
    # the lock belongs to the open file, so the child closes its copies and only the run holds it.
    for fd in _HELD:
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_in_child)


@contextlib.contextmanager
def folder_lock(folder: Path, command: str, name: str = LOCK_FILE) -> Iterator[Path]:
    """Create `folder` if needed and hold its lock file `name` for the block; `command` names the run in the refusal."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder; {command} writes into a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"{folder}: cannot write there ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{folder}: another {command} is writing there (it holds {name}); "
                            "wait for it to finish or choose another output folder") from None
        _HELD.add(fd)
        yield folder
    finally:
        _HELD.discard(fd)
        os.close(fd)  # closing releases the lock; so does the process dying
