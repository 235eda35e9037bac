"""One dataset's folder as downloaded: where its files are, read from disk once, never opened to check them.

Converters hold a `DatasetRoot` (as `self.tree`) rather than inherit these abilities:
- `find_file` / `find_dir`: the shallowest entry of a name, case-insensitive, up to SEARCH_DEPTH
  levels deep (a re-zipped download adds a level or two); `levels` is the same breadth-first walk
  for searches of another kind (files by pattern, folders by a tag in their name);
- `files` / `not_files` / `listing` / `subfolders`: one folder's entries, read once per run (one
  `scandir`). An image is a regular file or a symlink to one (wherever it points: image folders
  are often linked from another disk); a folder or a broken link named like an image is not one;
- `unwrap`: a folder extracted into a folder of its own name (`img_align_celeba/img_align_celeba/`);
  `innermost`: down through wrapper folders to the one holding the files (`text/celeba-caption/`);
- `escapes`: the unsafe-path rule, the one place it is written;
- `head`: the first bytes of a file as text, to recognise it by content;
- `given`: a path passed as an option, checked to be a file or folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import UserError

from .rows import prefixed

SEARCH_DEPTH = 3  # annotation files may sit up to two folder levels below the root (re-zipped downloads)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
IMAGE_NAME = "(" + "|".join(re.escape(ext) for ext in sorted(IMAGE_EXTENSIONS)) + ")$"  # with ignore_case=True
UNSAFE_PATH = r"(^/|^[A-Za-z]:|^~|\\|(^|/)\.\.(/|$))"  # absolute, drive, home, backslash or `..` step
HEAD_BYTES = 8192  # enough to recognise a file: a caption file's first entry, a table's header and first line


class DatasetRoot:
    """The extracted download of dataset `name` at `path` (resolved), with its listings cached."""

    def __init__(self, path: Path, name: str):
        self.name = name
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise UserError(f"{name}: dataset root {self.path} is not a directory")
        self._scans: dict[Path, tuple[frozenset[str], frozenset[str]]] = {}  # folder -> (files, other entries)

    # -- listing --------------------------------------------------------------------------
    def files(self, folder: Path) -> frozenset[str]:
        """Names of the files of one folder (regular files, or symlinks to them), listed once per run.

        Directory entries carry their type, so only symlinks cost a stat; nothing is opened.
        """
        return self._scan(folder)[0]

    def not_files(self, folder: Path) -> frozenset[str]:
        """Names of the other entries of one folder: folders, and links to folders or to nothing."""
        return self._scan(folder)[1]

    def listing(self, folder: Path) -> frozenset[str]:
        """Names of all the entries of one folder."""
        files, others = self._scan(folder)
        return files | others if others else files

    def subfolders(self, folder: Path, hidden: bool = False) -> list[Path]:
        """The subfolders of a folder (links to folders included; hidden ones only with `hidden`), sorted."""
        folder = Path(folder)
        return [
            folder / n
            for n in sorted(self.not_files(folder))
            if (hidden or not n.startswith(".")) and (folder / n).is_dir()
        ]

    def _scan(self, folder: Path) -> tuple[frozenset[str], frozenset[str]]:
        folder = Path(folder)
        if folder not in self._scans:
            files, others = [], []
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        (files if entry.is_file() else others).append(entry.name)
            except OSError:  # absent, not a folder, unreadable: nothing we can use is in it
                pass
            self._scans[folder] = (frozenset(files), frozenset(others))
        return self._scans[folder]

    def levels(self, under: Path | None = None, descend: Callable[[Path], bool] | None = None) -> Iterator[list[Path]]:
        """The folders breadth-first, one list per level (`under` alone first), SEARCH_DEPTH levels.

        A level is listed only when the caller asks for it, so a search that succeeds early never lists
        the big image folders below; `descend(folder)` false keeps a subfolder out of the next level.
        """
        level = [Path(under) if under is not None else self.path]
        for depth in range(SEARCH_DEPTH):
            yield level
            if depth + 1 < SEARCH_DEPTH:
                level = [sub for folder in level for sub in self.subfolders(folder) if descend is None or descend(sub)]

    # -- finding --------------------------------------------------------------------------
    def find_file(self, *names: str, under: Path | None = None, required: bool = True) -> Path | None:
        """The shallowest file with one of `names` (case-insensitive) within SEARCH_DEPTH levels."""
        return self._find(names, under, want_dir=False, required=required)

    def find_dir(self, *names: str, under: Path | None = None, required: bool = True) -> Path | None:
        return self._find(names, under, want_dir=True, required=required)

    def _find(self, names, under, want_dir, required):
        wanted = {n.lower(): i for i, n in enumerate(names)}
        for level in self.levels(under):
            exact = [
                (i, folder / name)
                for folder in level
                for i, name in enumerate(names)
                if (folder / name).is_dir() == want_dir and (folder / name).exists()
            ]
            if exact:  # the usual case, found without listing big image folders
                return min(exact)[1]
            hits = [
                (wanted[entry.lower()], folder / entry)
                for folder in level
                for entry in sorted(self.listing(folder))
                if entry.lower() in wanted and (folder / entry).is_dir() == want_dir
            ]
            if hits:
                return min(hits)[1]
        if required:
            kind = "folder" if want_dir else "file"
            raise UserError(
                f"{self.name}: no {kind} named {' or '.join(names)} under {under or self.path} "
                f"(looked {SEARCH_DEPTH} levels deep); is --root the extracted download?"
            )
        return None

    def unwrap(self, folder: Path, *names: str) -> Path:
        """`folder/folder` (or `folder/NAME`) where a download was extracted into a folder of its own name."""
        folder = Path(folder)
        nested = [folder / n for n in (folder.name, *names) if (folder / n).is_dir()]
        return nested[0] if nested else folder

    def innermost(self, folder: Path, suffixes) -> Path:
        """Step through wrapper folders (`text/celeba-caption/`, `image/images/`) to the one holding files with
        one of the `suffixes`: down while a folder holds none of them and exactly one visible subfolder."""
        folder = Path(folder)
        while not any(Path(name).suffix.lower() in suffixes for name in self.files(folder)):
            subfolders = self.subfolders(folder)
            if len(subfolders) != 1:
                break
            folder = subfolders[0]
        return folder

    def given(self, value: Path | None, option: str, folder: bool = False, expected: str = "") -> Path | None:
        """The path an option names, absolute; None when the option is not set.

        A path (or symlink) under the root stays there; any other is resolved, so that its relation to the
        resolved root is known.
        """
        if value is None:
            return None
        path = Path(os.path.abspath(Path(value).expanduser()))
        if not path.is_relative_to(self.path):
            path = path.resolve()
        if not (path.is_dir() if folder else path.is_file()):
            kind = "folder" if folder else "file"
            raise UserError(
                f"{self.name}: option {option}={value}: no such {kind}" + (f"; expected {expected}" if expected else "")
            )
        return path

    # -- paths ----------------------------------------------------------------------------
    def rel(self, path: Path) -> str:
        """A path under the root as a POSIX string relative to the root."""
        return PurePosixPath(Path(path).relative_to(self.path)).as_posix()

    def prefix(self, folder: Path) -> str:
        """`folder/` relative to the root ('' for the root itself), to put before file names."""
        return "" if Path(folder) == self.path else self.rel(folder) + "/"

    def shown(self, path: Path) -> str:
        """A path relative to the root where it lies under it, else absolute."""
        return self.rel(path) if Path(path).is_relative_to(self.path) else Path(path).as_posix()

    def escapes(self, paths: pa.Array, where: np.ndarray | None = None) -> np.ndarray:
        """True for the root-relative paths that would leave the root (absolute, `~`, `\\`, `..`).

        `where` limits the check to some rows (the regex is the slowest step on 100k paths); others are False.
        """
        if where is None:
            return pc.match_substring_regex(paths, UNSAFE_PATH).to_numpy(zero_copy_only=False)
        unsafe = np.zeros(len(paths), dtype=bool)
        if where.any():
            unsafe[where] = pc.match_substring_regex(paths.filter(pa.array(where)), UNSAFE_PATH).to_numpy(
                zero_copy_only=False
            )
        return unsafe

    def existing(self, images: pa.Array, folders) -> np.ndarray:
        """Mask of the root-relative image paths that are files in the given folders."""
        present = []
        for folder in folders:
            names = pa.array(list(self.files(folder)), pa.string())  # a set: order does not matter
            present.append(names if Path(folder) == self.path else prefixed(self.prefix(folder), names))
        value_set = pa.concat_arrays(present) if present else pa.array([], pa.string())
        return pc.is_in(images, value_set=value_set).to_numpy(zero_copy_only=False)

    # -- content --------------------------------------------------------------------------
    @staticmethod
    def head(path: Path, size: int = HEAD_BYTES) -> str:
        """The first `size` bytes of a file as text ("" if unreadable: a file we only sniff is not an error)."""
        try:
            with open(path, "rb") as f:
                return f.read(size).decode("utf-8-sig", errors="replace")
        except OSError:
            return ""
