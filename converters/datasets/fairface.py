"""FairFace: age bin, gender and race per face -> `fairface age: 10-19; gender: female; race: east asian`.

Reads `fairface_label_train.csv` and `fairface_label_val.csv` (header `file,age,gender,race,
service_test`; service_test is not part of the text) as strings. Images come in two paddings,
`fairface-img-margin025-trainval/` and `fairface-img-margin125-trainval/`, each holding `train/`
and `val/`; both are the same faces, so they share image ids and one variant is converted.
Age bins a spreadsheet turned into dates (`9-Mar` for 3-9) are repaired (or rejected on request).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from common.errors import UserError

from ..helpers.base import Converter
from ..helpers.rows import attribute_columns, make_table, stems
from ..helpers.tables import read_csv

LABEL_FILES = {"train": "fairface_label_train.csv", "val": "fairface_label_val.csv"}
COLUMNS = ["file", "age", "gender", "race"]
PADDING_FOLDERS = {"0.25": "margin025", "1.25": "margin125"}  # part of the image folders' names
DEFAULT_PADDING = "0.25"
EXCEL_EPOCH = date(1899, 12, 30)  # a date cell exported as its serial number counts days from here


@dataclasses.dataclass
class Options:
    padding: Literal["0.25", "1.25"] | None = None  # image variant when both are present (default 0.25)
    repair_ages: bool = True  # age bins turned into dates by a spreadsheet: repair them, or reject them


class FairFace(Converter):
    name = "fairface"
    Options = Options

    def convert(self):
        labels = self.manifest["labels"]
        cols = self.read_labels()
        cols = self.reject_repeats(cols, cols["file"])
        cols = self.repair_spreadsheet_ages(cols, labels)
        cols = self.map_labels(cols, ["age"], {bin_: bin_ for bin_ in labels["age"]})
        cols = self.map_labels(cols, ["gender"], labels["gender"])
        cols = self.map_labels(cols, ["race"], labels["race"])
        cols = self.split_by_prefix(cols)

        folders = self.image_folders()
        folder = pc.if_else(
            pc.equal(cols["split"], "train"), self.tree.rel(folders["train"]), self.tree.rel(folders["val"])
        )
        cols["image"] = pc.binary_join_element_wise(folder, cols["name"], "/")
        cols = self.drop_missing_images(cols, folders.values())

        text, attributes = attribute_columns(
            self.name, ["age", "gender", "race"], [cols["age"], cols["gender"], cols["race"]]
        )
        image_id = pc.binary_join_element_wise("fairface", cols["split"], stems(cols["name"]), "/")
        yield make_table(
            len(image_id),
            dataset=self.name,
            image=cols["image"],
            image_id=image_id,
            split=cols["split"],
            kind="attributes",
            text=text,
            attributes=attributes,
            source=cols["source"],
        )

    def split_by_prefix(self, cols: dict) -> dict:
        """Split and file name from `train/<n>.jpg` / `val/<n>.jpg`; other paths are rejected.

        (`train/../x.jpg` passes here and is rejected with the image paths: drop_missing_images.)
        """
        file = cols["file"]
        head = pc.utf8_lower(pc.utf8_slice_codeunits(file, 0, len("train/")))  # ignore_case would run a regex
        is_train, is_val = (pc.starts_with(head, f"{split}/") for split in LABEL_FILES)
        cols["split"] = pc.if_else(is_train, "train", pc.if_else(is_val, "val", pa.scalar(None, pa.string())))
        cols["name"] = pc.if_else(
            is_train, pc.utf8_slice_codeunits(file, len("train/")), pc.utf8_slice_codeunits(file, len("val/"))
        )
        cols = self.reject_unsafe(cols, "file", where=cols["split"].is_null().to_numpy(zero_copy_only=False))
        return self.reject_where(
            cols,
            cols["split"].is_null().to_numpy(zero_copy_only=False),
            "no split",
            pc.binary_join_element_wise("file does not start with train/ or val/: ", cols["file"], ""),
        )

    def read_labels(self) -> dict:
        """Both label files, every column as strings, concatenated (train first)."""
        tables = [
            read_csv(path, self.tree.rel(path), COLUMNS, self.reject)
            for path in (self.tree.find_file(name) for name in LABEL_FILES.values())
        ]
        self.count_records(sum(t.records for t in tables))
        cols = {"source": pa.concat_arrays([t.sources() for t in tables])}
        cols.update({name: pa.concat_arrays([t[name] for t in tables]) for name in COLUMNS})
        return cols

    def repair_spreadsheet_ages(self, cols: dict, labels: dict) -> dict:
        """Age values that are dates made from a bin (`9-Mar`, `19-Oct`, `2019-03-09`): repaired
        to their bin with a note, or rejected with `repair_ages=false`. Other values are left to the
        vocabulary check."""
        bins = labels["age"]
        odd = pc.unique(cols["age"].filter(pc.invert(pc.is_in(cols["age"], value_set=pa.array(bins)))))
        repairs = {
            value: bin_
            for value in odd.to_pylist()
            if (bin_ := bin_from_date(value, bins, labels["spreadsheet_months"])) is not None
        }
        if not repairs:
            return cols
        index = pc.index_in(cols["age"], value_set=pa.array(list(repairs)))
        repaired = pa.array(list(repairs.values()), pa.string()).take(index)
        mangled = repaired.is_valid().to_numpy(zero_copy_only=False)
        if not self.options.repair_ages:
            detail = pc.binary_join_element_wise("age='", cols["age"], "' is bin ", repaired, " turned into a date", "")
            return self.reject_where(cols, mangled, "spreadsheet date", detail)
        counts = Counter(cols["age"].filter(mangled).to_pylist())
        self.notes.append(
            f"repaired {int(mangled.sum())} age values a spreadsheet had turned into dates: "
            + ", ".join(f"{v!r} -> {repairs[v]} ({counts[v]})" for v in sorted(counts))
        )
        cols["age"] = pc.coalesce(repaired, cols["age"])
        return cols

    def image_folders(self) -> dict[str, Path]:
        """`train/` and `val/` of the chosen padding variant (or wherever they are, if unnamed)."""
        variants = self.padding_variants()
        padding = self.options.padding
        if not variants:
            if padding is not None:
                raise UserError(
                    f"{self.name}: padding={padding} asked for, but no folder named like "
                    f"fairface-img-{PADDING_FOLDERS[padding]}-trainval under {self.root}"
                )
            train = self.tree.find_dir("train")
            self.notes.append(
                f"images: {self.tree.rel(train)} (and val beside it), padding unknown "
                f"(not inside a fairface-img-margin025/125 folder)"
            )
        else:
            padding = padding or (DEFAULT_PADDING if DEFAULT_PADDING in variants else next(iter(variants)))
            if padding not in variants:
                raise UserError(
                    f"{self.name}: padding={padding} asked for, but only "
                    f"{', '.join(self.tree.rel(v) for v in variants.values())} found under {self.root}"
                )
            train = self.tree.find_dir("train", under=variants[padding])
            others = [p for p in variants if p != padding]
            self.notes.append(
                f"images: padding {padding} ({self.tree.rel(variants[padding])})"
                + (f"; padding {others[0]} also present (option padding={others[0]})" if others else "")
            )
        return {"train": train, "val": self.tree.find_dir("val", under=train.parent)}

    def padding_variants(self) -> dict[str, Path]:
        """The shallowest folder whose name says its padding (`...margin025...`), per padding."""
        found: dict[str, Path] = {}
        for level in self.tree.levels(descend=lambda folder: padding_of(folder) is None and not image_set(folder)):
            for folder in level:
                for sub in self.tree.subfolders(folder):
                    if not image_set(sub) and (padding := padding_of(sub)) is not None:
                        found.setdefault(padding, sub)
        return dict(sorted(found.items()))


def padding_of(folder: Path) -> str | None:
    return next((p for p, tag in PADDING_FOLDERS.items() if tag in folder.name.lower()), None)


def image_set(folder: Path) -> bool:
    """`train/` or `val/`: never listed while searching (87k files)."""
    return folder.name.lower() in LABEL_FILES


def bin_from_date(value: str, bins: list[str], months: list[str]) -> str | None:
    """The age bin `a-b` that a spreadsheet turned into the date `value`, if any.

    Excel reads `3-9` as 9 March and writes `9-Mar` (or `Mar-09`, `3/9/2019`, `2019-03-09`, or the
    serial number 43533); `10-19` becomes `19-Oct`. The date's month and day (or day and month)
    are the bin's two numbers; a 4-digit year is ignored. Returns None for anything else.
    """
    tokens = re.findall(r"[A-Za-z]+|\d+", value)
    if len(tokens) == 1 and tokens[0].isdigit() and 20000 <= int(tokens[0]) <= 80000:
        day = EXCEL_EPOCH + timedelta(days=int(tokens[0]))
        numbers = [day.month, day.day]
    else:
        numbers = []
        for token in tokens:
            if token.isalpha():
                if token[:3].lower() not in months:
                    return None
                numbers.append(months.index(token[:3].lower()) + 1)
            elif len(token) != 4:
                numbers.append(int(token))
    if len(numbers) != 2:
        return None
    a, b = numbers
    return next((c for c in (f"{a}-{b}", f"{b}-{a}") if c in bins), None)


CONVERTER = FairFace
