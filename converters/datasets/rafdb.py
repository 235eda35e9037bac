"""RAF-DB: aligned faces with a basic (7) or compound (11) expression, plus gender, race and age group.

Each subset (`basic/`, required; `compound/`, optional) has `EmoLabel/list_patition_label.txt` (sic;
`list_partition_label.txt` is accepted too) with lines `train_00001.jpg 5`, and the aligned faces
`Image/aligned/train_00001_aligned.jpg`. The split is the name's prefix. Where
`Annotation/manual/<stem>_manu_attri.txt` exists (5 landmark lines, then gender, race and age-group
codes), its gender, race and age are added to the text.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import UserError

from ..helpers.base import Converter
from ..helpers.rows import attribute_columns, make_table, map_values, prefixed, stems
from ..helpers.tables import read_table

LABEL_FILES = ("list_patition_label.txt", "list_partition_label.txt")  # the download's spelling first
ALIGNED_DIR = "aligned"
MANUAL_DIR = "manual"
MANUAL_SUFFIX = "_manu_attri.txt"
MANUAL_LINES = 8  # 5 landmark lines, then gender, race, age group
ALIGNED_SUFFIX = "_aligned.jpg"


@dataclasses.dataclass
class Options:
    compound: bool = True  # also convert the compound subset when its folder is present
    manual: bool = True  # add gender, race and age from Annotation/manual when present


class RafDB(Converter):
    name = "rafdb"
    Options = Options

    def convert(self):
        labels = self.manifest["labels"]
        for subset, folder in self.subsets():
            yield self.convert_subset(subset, folder, labels)

    def subsets(self) -> list[tuple[str, Path]]:
        found = [("basic", self.tree.find_dir("basic", required=False) or self.bare_basic())]
        if not self.options.compound:
            self.notes.append("compound subset not converted (option compound=false)")
            return found
        compound = self.tree.find_dir("compound", required=False)
        if compound is None:
            self.notes.append("no compound/ folder: only the basic subset was converted")
        else:
            found.append(("compound", compound))
        return found

    def bare_basic(self) -> Path:
        """A root holding the basic subset's own folders (EmoLabel/, Image/) without `basic/` above them."""
        path = self.tree.find_file(*LABEL_FILES, required=False)
        if path is None or "compound" in [p.lower() for p in (self.root.name, *Path(self.tree.rel(path)).parts)]:
            raise UserError(
                f"rafdb: no basic/EmoLabel/{LABEL_FILES[0]} (or {LABEL_FILES[1]}) under {self.root}; "
                "is --root the extracted RAF-DB download?"
            )
        self.notes.append(f"no basic/ folder: read {self.tree.rel(path)} as the basic subset")
        return (
            path.parent.parent if path.parent.name.lower() == "emolabel" and path.parent != self.root else path.parent
        )

    def convert_subset(self, subset: str, folder: Path, labels: dict) -> pa.Table:
        path = self.tree.find_file(*LABEL_FILES, under=folder)
        table = read_table(path, self.tree.rel(path), ["name", "label"], self.reject)
        self.count_records(table.records)
        cols = {"source": table.sources(), "name": table["name"], "label": table["label"]}
        cols = self.reject_repeats(cols, cols["name"])
        cols = self.map_labels(cols, ["label"], labels["expression"][subset])
        aligned = self.aligned_dir(folder)
        cols["image"] = self.aligned_images(aligned, stems(cols["name"]))
        cols = self.drop_missing_images(cols, [aligned])
        cols["split"] = split_from_prefix(cols["name"], labels["split_prefix"])
        cols = self.reject_where(
            cols,
            cols["split"].is_null().to_numpy(zero_copy_only=False),
            "no split",
            f"name starts with none of {', '.join(labels['split_prefix'])}",
        )
        names = stems(cols["name"])
        manual = self.manual_values(folder, names, labels) if self.options.manual else {}
        text, attributes = attribute_columns(self.name, ["expression", *manual], [cols["label"], *manual.values()])
        return make_table(
            len(names),
            dataset=self.name,
            image=cols["image"],
            image_id=prefixed(f"rafdb/{subset}/", names),
            split=cols["split"],
            kind="attributes",
            text=text,
            attributes=attributes,
            source=cols["source"],
        )

    def aligned_dir(self, folder: Path) -> Path:
        return self.tree.unwrap(self.tree.find_dir(ALIGNED_DIR, under=folder), ALIGNED_DIR)  # aligned.zip in aligned/

    def aligned_images(self, aligned: Path, names: pa.Array) -> pa.Array:
        """Root-relative `<stem>_aligned.jpg` paths, spelled as on disk when only the case differs."""
        on_disk = sorted(self.tree.files(aligned))
        wanted = pc.binary_join_element_wise(names, ALIGNED_SUFFIX, "")
        found = pa.array(on_disk, pa.string()).take(
            pc.index_in(pc.utf8_lower(wanted), value_set=pa.array([n.lower() for n in on_disk], pa.string()))
        )
        return prefixed(self.tree.rel(aligned) + "/", pc.coalesce(found, wanted))

    def manual_values(self, folder: Path, names: pa.Array, labels: dict) -> dict[str, pa.Array]:
        """Gender, race and age per face from `<stem>_manu_attri.txt` (null where absent or unusable)."""
        manual = self.tree.find_dir(MANUAL_DIR, under=folder, required=False)
        if manual is None:
            self.notes.append(
                f"no Annotation/manual folder in {self.tree.rel(folder) or '.'}: texts carry the expression only"
            )
            return {}
        files = {n.lower(): n for n in self.tree.listing(manual) if n.lower().endswith(MANUAL_SUFFIX)}
        stems_ = names.to_pylist()
        codes = {key: [None] * len(stems_) for key in labels["manual"]}
        problems: dict[str, list[str]] = {}  # what is wrong -> the faces it is wrong for
        for i, stem in enumerate(stems_):
            name = files.get(stem.lower() + MANUAL_SUFFIX)
            lines = read_manual(manual / name) if name else None
            if lines is None:
                problems.setdefault("no manual file" if name is None else "a malformed manual file", []).append(stem)
                continue
            for key, code in zip(codes, lines):
                codes[key][i] = code
        values = {}
        for key, raw in codes.items():
            raw = pa.array(raw, pa.string())
            values[key] = map_values(raw, labels["manual"][key])
            omitted = labels.get("manual_omitted", {}).get(key, [])
            unmapped = pc.and_(values[key].is_null(), raw.is_valid()).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(unmapped):
                code = raw[i].as_py()
                why = f"{key} code {code}, left out by the manifest" if code in omitted else f"an unknown {key} code"
                problems.setdefault(why, []).append(f"{stems_[i]}: {key} {code!r}")
        for why, faces in sorted(problems.items()):
            self.notes.append(
                f"{self.tree.rel(manual)}: {len(faces)} of {len(stems_)} faces with {why} (e.g. {faces[0]}); "
                "the pairs it would give are left out of their texts"
            )
        return values


def read_manual(path: Path) -> list[str] | None:
    """The gender, race and age codes (lines 6-8) of one manual file, or None if it is not 8 lines."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return None
    lines = [line for line in lines if line]
    return lines[5:] if len(lines) == MANUAL_LINES else None


def split_from_prefix(names: pa.Array, prefixes: dict) -> pa.Array:
    lower = pc.utf8_lower(names)
    split = pa.nulls(len(names), pa.string())
    for prefix, name in prefixes.items():
        split = pc.if_else(pc.starts_with(lower, prefix), pa.scalar(name), split)
    return split


CONVERTER = RafDB
