"""AFAD: age and gender from the folders -> `afad age: 15; gender: male`.

A record is an image found by walking `AFAD-Full/<age>/<111|112>/` (AFAD-Lite alike); no image is
opened. Folders that are not numbers, files that are not images (README.md, Thumbs.db, the
list) and folders inside a gender folder are skipped and counted in the notes. An age folder
outside the manifest's `labels.age` range (`0`, `999`) is no AFAD age: its images are rejected as
`age out of range`. Where `AFAD-Full.txt` exists it is cross-checked: listed images absent from
disk are rejected as `image missing`, images not listed are kept, and lines naming files that are
not images (the real list names 14 `Thumbs.db`) are not records (noted).
No official split: `hash_split` by person (the `<personId>` of `<personId>-<k>.jpg`).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import UserError

from ..helpers.base import Converter
from ..helpers.root import IMAGE_NAME
from ..helpers.rows import attribute_columns, person_split_attributes, prefixed
from ..helpers.tables import read_table

FOLDERS = {"full": "AFAD-Full", "lite": "AFAD-Lite"}  # the list file is <folder>.txt
LIST_PATH = r"^[^/]+/[^/]+/[^/]+$"  # <age>/<gender>/<file>, after the leading ./


@dataclasses.dataclass
class Options:
    variant: Literal["auto", "full", "lite"] = "auto"  # auto: AFAD-Full if present, else AFAD-Lite


@dataclasses.dataclass
class Walk:
    """The images under one AFAD folder: per <age>/<gender> folder, its sorted file names."""

    folders: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    names: list[list[str]] = dataclasses.field(default_factory=list)
    skipped_files: Counter = dataclasses.field(default_factory=Counter)
    skipped_dirs: list[str] = dataclasses.field(default_factory=list)
    inner_dirs: list[str] = dataclasses.field(default_factory=list)  # folders in a gender folder (`x.jpg/`)


class AFAD(Converter):
    name = "afad"
    Options = Options

    def convert(self):
        variant, folder = self.variant_folder()
        self.variant = variant
        cols = self.image_columns(folder)
        self.count_records(len(cols["key"]))
        list_file = self.find_list(folder, FOLDERS[variant])
        if list_file:  # before any image is rejected, so that a listed image is never counted twice
            cols["source"] = pc.coalesce(self.cross_check(list_file, folder, cols), cols["image"])
        else:
            self.notes.append(f"no {FOLDERS[variant]}.txt found: the images on disk are all the records")
        cols = self.map_labels(cols, ["gender"], self.manifest["labels"]["gender"])
        cols = self.reject_implausible_ages(cols, self.manifest["labels"]["age"])

        text, attributes = attribute_columns(self.name, ["age", "gender"], [cols["age"], cols["gender"]])
        stem = pc.list_element(
            pc.split_pattern(cols["name"], ".", max_splits=1, reverse=True), 0
        )  # split beats a regex
        image_id = pc.binary_join_element_wise("afad/", cols["folder"], stem, "")
        person = self.persons(cols["name"])
        yield person_split_attributes(self.name, cols["image"], image_id, text, attributes, cols["source"], person)

    def reject_implausible_ages(self, cols: dict, bounds: dict) -> dict:
        age = pc.cast(cols["age"], pa.int64()).to_numpy(zero_copy_only=False)
        bad = (age < bounds["min"]) | (age > bounds["max"])
        detail = pc.binary_join_element_wise(
            "age folder ", cols["age"], f" outside {bounds['min']}..{bounds['max']}", ""
        )
        return self.reject_where(cols, bad, "age out of range", detail)

    def summary(self, table: pa.Table) -> dict:
        summary = super().summary(table)
        if getattr(self, "variant", None) == "lite":
            summary["expected"]["official"] = self.manifest["counts"]["lite"]
        return summary

    # -- which folder ----------------------------------------------------------------------
    def variant_folder(self) -> tuple[str, Path]:
        if any(_is_number(sub.name) for sub in self.tree.subfolders(self.root)):
            self.notes.append("--root itself holds the <age> folders")
            variant = "lite" if self.root.name.lower() == FOLDERS["lite"].lower() else "full"
            return variant, self.root
        found = {v: self.tree.find_dir(name, required=False) for v, name in FOLDERS.items()}
        wanted = self.options.variant
        if wanted == "auto":
            wanted = "full" if found["full"] else "lite"
        if found[wanted] is None:
            looked_for = " or ".join(FOLDERS.values()) if self.options.variant == "auto" else FOLDERS[wanted]
            present = ", ".join(FOLDERS[v] for v, f in found.items() if f) or "neither"
            raise UserError(
                f"{self.name}: no folder named {looked_for} under {self.root} (found: {present}); "
                "is --root the extracted download?"
            )
        for other, folder in found.items():
            if other != wanted and folder:
                self.notes.append(
                    f"{self.tree.rel(folder)} is also present and was not converted (option variant={other})"
                )
        if wanted == "lite":
            self.notes.append(f"AFAD-Lite is expected to hold {self.manifest['counts']['lite']['total']} images")
        return wanted, self.tree.unwrap(found[wanted])  # a re-zipped AFAD-Full/AFAD-Full/

    # -- walking ---------------------------------------------------------------------------
    def walk(self, folder: Path) -> Walk:
        walk = Walk()
        for age in self.numbered_folders(folder, walk):
            for gender in self.numbered_folders(age, walk):
                walk.folders.append((age.name, gender.name))
                walk.names.append(sorted(self.tree.files(gender)))  # a folder named x.jpg is no image
                walk.inner_dirs += sorted(f"{self.tree.rel(gender)}/{n}" for n in self.tree.not_files(gender))
        return walk

    def numbered_folders(self, folder: Path, walk: Walk) -> Iterator[Path]:
        """The subfolders named by a number, in name order; the other entries are counted in `walk` as skipped."""
        subfolders = set(self.tree.subfolders(folder, hidden=True))
        for name in sorted(self.tree.listing(folder)):
            path = folder / name
            if path not in subfolders:
                walk.skipped_files[name] += 1
            elif not _is_number(name):
                walk.skipped_dirs.append(self.tree.rel(path))
            else:
                yield path

    def image_columns(self, folder: Path) -> dict:
        """One row per image: key `<age>/<gender>/<file>`, image path, name, age, gender code."""
        walk = self.walk(folder)
        names = pa.concat_arrays([pa.array(n, pa.string()) for n in walk.names] or [pa.array([], pa.string())])
        folder_of = np.repeat(np.arange(len(walk.folders)), [len(n) for n in walk.names])
        is_image = pc.match_substring_regex(names, IMAGE_NAME, ignore_case=True).to_numpy(zero_copy_only=False)
        walk.skipped_files.update(names.filter(pa.array(~is_image)).to_pylist())  # Thumbs.db, ...
        names, folder_of = names.filter(pa.array(is_image)), pa.array(folder_of[is_image])
        prefix = pa.array([f"{age}/{gender}/" for age, gender in walk.folders], pa.string()).take(folder_of)
        key = pc.binary_join_element_wise(prefix, names, "")
        self.note_walk(folder, walk, len(names))
        image = prefixed(self.base(folder), key)
        return {
            "source": image,
            "image": image,
            "key": key,
            "name": names,
            "folder": prefix,
            "age": pa.array([str(int(age)) for age, _ in walk.folders], pa.string()).take(folder_of),  # 015 -> 15
            "gender": pa.array([gender for _, gender in walk.folders], pa.string()).take(folder_of),
        }

    def persons(self, names: pa.Array) -> pa.Array:
        """`afad:<personId>` from `<personId>-<k>.jpg`; null for a name without a dash."""
        person = pc.list_element(pc.split_pattern(names, "-", max_splits=1), 0)
        has_dash = pc.greater_equal(pc.find_substring(names, "-"), 1)
        return pc.if_else(has_dash, prefixed("afad:", person), pa.scalar(None, pa.string()))

    def base(self, folder: Path) -> str:
        """The folder as a prefix of root-relative paths."""
        return "" if folder == self.root else self.tree.rel(folder) + "/"

    def note_walk(self, folder: Path, walk: Walk, images: int) -> None:
        self.notes.append(
            f"walked {self.tree.rel(folder)}: {images} images in {len(walk.folders)} <age>/<gender> folders"
        )
        if walk.skipped_files:
            most = sorted(walk.skipped_files.items(), key=lambda item: (-item[1], item[0]))[:5]
            common = ", ".join(f"{name} {count}" for name, count in most)
            self.notes.append(f"skipped {sum(walk.skipped_files.values())} files that are not images ({common})")
        if walk.skipped_dirs:
            shown = ", ".join(walk.skipped_dirs[:5])
            self.notes.append(f"skipped {len(walk.skipped_dirs)} folders that are not numbers ({shown})")
        if walk.inner_dirs:
            shown = ", ".join(walk.inner_dirs[:5])
            self.notes.append(
                f"skipped {len(walk.inner_dirs)} folders inside <age>/<gender> folders, not images ({shown})"
            )

    # -- the list file ---------------------------------------------------------------------
    def find_list(self, folder: Path, folder_name: str) -> Path | None:
        """`<folder>.txt` inside the folder or beside it (case-insensitive), else None."""
        wanted = f"{folder_name}.txt".lower()
        for place in [folder, *folder.parents]:
            hit = next((place / name for name in sorted(self.tree.files(place)) if name.lower() == wanted), None)
            if hit or place == self.root:
                return hit
        return None

    def cross_check(self, path: Path, folder: Path, cols: dict) -> pa.Array:
        """Reject list lines that match no image on disk; return each image's `list:line` (null if unlisted)."""
        table = read_table(path, self.tree.rel(path), ["path"], self.reject)  # a line with spaces: malformed line
        self.count_records(table.malformed)
        paths = pc.replace_substring_regex(table["path"], r"^\./", "")
        paths = pc.replace_substring_regex(paths, f"^(?i){re.escape(folder.name)}/", "")
        lines = self.image_lines(path, {"source": table.sources(), "path": paths})
        line_of_image = pc.index_in(cols["key"], value_set=lines["path"])  # the first line naming each image
        sources = lines["source"]
        self.count_records(len(sources) - (len(line_of_image) - line_of_image.null_count))  # the lines of no image
        lines = self.reject_repeats(lines, lines["path"])
        unmatched = pc.invert(pc.is_in(lines["path"], value_set=cols["key"]))
        lines = {k: v.filter(unmatched) for k, v in lines.items()}
        lines = self.reject_unsafe(lines, "path")
        odd = ~pc.match_substring_regex(lines["path"], LIST_PATH).to_numpy(zero_copy_only=False)
        lines = self.reject_where(lines, odd, "malformed line", "expected ./<age>/<gender>/<file>")
        every = np.ones(len(lines["path"]), dtype=bool)  # each line left names an image that is not on disk
        self.reject_where(lines, every, "image missing", prefixed(self.base(folder), lines["path"]))
        unlisted = line_of_image.null_count
        if unlisted:
            self.notes.append(f"{unlisted} images on disk are not listed in {self.tree.rel(path)} (kept)")
        return sources.take(line_of_image)

    def image_lines(self, path: Path, lines: dict) -> dict:
        """The list lines naming images; lines naming other files (Thumbs.db and the like) are no records, noted."""
        image = pc.match_substring_regex(lines["path"], IMAGE_NAME, ignore_case=True).to_numpy(zero_copy_only=False)
        if image.all():
            return lines
        names = pc.replace_substring_regex(lines["path"].filter(pa.array(~image)), r"^.*/", "")
        common = ", ".join(f"{c['values']} {c['counts']}" for c in pc.value_counts(names).to_pylist()[:5])
        self.notes.append(
            f"{int((~image).sum())} lines of {self.tree.rel(path)} name files that are not images "
            f"({common}): not records"
        )
        return {k: v.filter(pa.array(image)) for k, v in lines.items()}


def _is_number(name: str) -> bool:
    return name.isascii() and name.isdigit()


CONVERTER = AFAD
