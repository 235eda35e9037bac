"""One writer per output folder: a lock held for the run and released by the kernel when the process dies.

The one lock policy, for every command that writes a folder (convert, build-corpus, tokenize-images, export,
preview, generate, evaluate --out, train):

    with folder_lock(out, "convert"): ...                          # writes into OUT: OUT/.lock
    with folder_lock(out, "tokenize-images", name=".lock-node-0"): # one lock per machine sharing OUT
    with folder_lock(out, "build-corpus", whole=True): ...         # replaces OUT whole: .OUT.lock beside it
    with folder_lock(out, "train"): ...                            # rank 0 only, around the whole run

`fcntl.flock` on the lock file, taken before any work: a second run on the same folder is refused at once
with a one-line `UserError` instead of doing all the work again and racing the first for the last write.
Only the holder removes the temporaries killed runs left (`common.fileio.remove_temporaries`) and
publishes (`common.fileio.publish_folder`). The lock file stays, empty (removing it would let two later
runs lock two different files; a pid in it would make two runs' folders differ).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError
from .fileio import output_folder

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
def folder_lock(
    folder: Path, command: str, name: str = LOCK_FILE, *, whole: bool = False, option: str = "--out"
) -> Iterator[Path]:
    """Create output `folder` if needed and hold its lock file `name` for the block; yields `folder`.

    command -- names the run in the refusal ("another convert is writing there")
    whole -- the command replaces `folder` whole (`publish_folder` onto it): the lock is `.FOLDER.lock`
             beside it, as one inside would be renamed away with the old folder; `folder` is not created
    """
    folder = Path(folder)
    if whole and folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {folder}: exists and is not a folder")
    holder = output_folder(folder.parent if whole else folder, option=option)
    name = f".{folder.name}.lock" if whole else name
    shown = holder / name if whole else name
    try:
        fd = os.open(holder / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"{option} {holder}: cannot write there ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{folder}: another {command} is writing there (it holds {shown}); "
                "wait for it to finish or choose another output folder"
            ) from None
        _HELD.add(fd)
        yield folder
    finally:
        _HELD.discard(fd)
        os.close(fd)  # closing releases the lock; so does the process dying
