"""AffectNet: expression, valence and arousal -> `affectnet expression: happy; valence: 0.53; arousal: -0.12`.

Two releases, told apart by their files:
- CSV release: `Manually_Annotated_file_lists/training.csv` and `validation.csv` (420k rows, each with
  136 landmarks: ~450 MB), images `Manually_Annotated_Images/<subDirectory_filePath>`, full web
  photos cropped with the face box; some users have an extra `Manually_Annotated/` level.
- npy release: `train_set|val_set/images/<id>.jpg` (already cropped) with
  `annotations/<id>_exp.npy`, `_val.npy`, `_aro.npy` (0-d arrays, numbers or strings).
Valence / arousal of -2 mean "not annotated": that pair is left out of the text.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import UserError

from ..helpers.base import Converter
from ..helpers.npyfiles import read_npy_scalars
from ..helpers.root import IMAGE_EXTENSIONS
from ..helpers.rows import NUMBER_TEXT, attribute_columns, box_column, make_table, prefixed, stems
from ..helpers.tables import read_csv

CSV_FILES = ("training.csv", "validation.csv")
CSV_IMAGE_DIR = "Manually_Annotated_Images"
PATH = "subDirectory_filePath"
BOX = ["face_x", "face_y", "face_width", "face_height"]
CSV_COLUMNS = [PATH, *BOX, "expression", "valence", "arousal"]  # facial_landmarks are not read
NPY_SETS = ("train_set", "val_set")
NPY_FILES = {"expression": "_exp.npy", "valence": "_val.npy", "arousal": "_aro.npy"}
AFFECT = ["valence", "arousal"]
MISSING = ["", "NULL", "null", "None", "NaN", "nan"]


@dataclasses.dataclass
class Options:
    keep_uncertain: bool = False  # keep expression 8 (None) and 9 (Uncertain) as `none` / `uncertain`
    release: Literal["auto", "csv", "npy"] = "auto"  # auto: the CSV release if its files are found


class AffectNet(Converter):
    name = "affectnet"
    Options = Options

    def convert(self):
        self.release = self.detect_release()
        self.notes.append(f"{self.release} release")
        cols = self.read_csv_release() if self.release == "csv" else self.read_npy_release()
        cols = self.parse_numbers(cols, [c for c in (*BOX, *AFFECT) if c in cols])
        cols = self.map_expressions(cols)
        cols = self.affect_values(cols)
        if self.release == "csv":
            cols = self.crop_boxes(cols)
            cols = self.locate_images(cols, self.tree.find_dir(CSV_IMAGE_DIR))
        keys = ["expression", *AFFECT]
        text, attributes = attribute_columns(self.name, keys, [cols[k] for k in keys])
        n = len(cols["source"])
        yield make_table(
            n,
            dataset=self.name,
            image=cols["image"],
            image_id=cols["image_id"],
            box=box_column(cols.get("box"), n),
            split=cols["split"],
            kind="attributes",
            text=text,
            attributes=attributes,
            source=cols["source"],
        )

    def detect_release(self) -> str:
        if self.options.release != "auto":
            return self.options.release
        if any(self.tree.find_file(name, required=False) for name in CSV_FILES):
            return "csv"
        if any(self.tree.find_dir(name, required=False) for name in NPY_SETS):
            return "npy"
        raise UserError(
            f"{self.name}: found neither the CSV release ({', '.join(CSV_FILES)}) nor the npy release "
            f"({'/, '.join(NPY_SETS)}/) under {self.root}; is --root the extracted download?"
        )

    # -- reading ------------------------------------------------------------------------------
    def read_csv_release(self) -> dict:
        parts = []
        for name in CSV_FILES:
            path = self.tree.find_file(name)
            table = read_csv(path, self.tree.rel(path), CSV_COLUMNS, self.reject)
            self.count_records(table.records)
            split = self.manifest["labels"]["split"][name]
            parts.append(
                {"source": table.sources(), "split": pa.array([split] * len(table), pa.string()), **table.columns}
            )
        cols = {k: pa.concat_arrays([p[k] for p in parts]) for k in parts[0]}
        return self.reject_failing(cols, {name: is_missing(cols[name]) for name in CSV_COLUMNS}, "missing value")

    def read_npy_release(self) -> dict:
        parts = [self.read_npy_set(name, self.tree.find_dir(name)) for name in NPY_SETS]
        cols = {k: pa.concat_arrays([p[k] for p in parts]) for k in parts[0]}
        for key in AFFECT:
            if cols[key].null_count:
                self.notes.append(f"{cols[key].null_count} face(s) without a {NPY_FILES[key]} file: {key} left out")
        return cols

    def read_npy_set(self, name: str, set_dir: Path) -> dict:
        """One record per image id: the ids named by the images and by the annotation files together."""
        images_dir, notes_dir = (
            self.tree.find_dir("images", under=set_dir),
            self.tree.find_dir("annotations", under=set_dir),
        )
        images = sorted(n for n in self.tree.files(images_dir) if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
        images = pa.array(images, pa.string())
        notes = pa.array(sorted(self.tree.listing(notes_dir)), pa.string())
        noted = pc.struct_field(pc.extract_regex(notes, r"^(?P<id>.+)_(?:exp|val|aro|lnd)\.npy$"), "id").drop_null()
        ids = pc.unique(pa.concat_arrays([stems(images), noted]))
        order = [("n", "ascending"), ("id", "ascending")]  # numeric ids in numeric order
        ids = ids.take(pc.sort_indices(pa.table({"n": pc.utf8_length(ids), "id": ids}), order))
        self.count_records(len(ids))
        exp_files = pc.binary_join_element_wise(ids, NPY_FILES["expression"], "")
        cols = {
            "source": prefixed(self.tree.rel(notes_dir) + "/", exp_files),
            "split": pa.array([self.manifest["labels"]["split"][name]] * len(ids), pa.string()),
            "id": ids,
            "image": prefixed(self.tree.rel(images_dir) + "/", images.take(pc.index_in(ids, value_set=stems(images)))),
            "image_id": prefixed(f"{self.name}/{name}/", ids),
        }
        cols = self.reject_where(
            cols,
            cols["image"].is_null().to_numpy(zero_copy_only=False),
            "image missing",
            f"no image of that id in {self.tree.rel(images_dir)}",
        )
        errors = np.full(len(cols["id"]), "", dtype=object)
        for key, suffix in NPY_FILES.items():
            files = [f"{i}{suffix}" for i in cols["id"].to_pylist()]
            values, problems = read_npy_scalars(notes_dir, files, self.tree.listing(notes_dir))
            cols[key] = pa.array(values, pa.string())
            errors = np.where(errors == "", problems, errors)
        cols["expression"] = pc.replace_substring_regex(cols["expression"], r"^(\d+)\.0*$", r"\1")  # stored as 1.0
        cols = self.reject_where(cols, errors != "", "unreadable annotation", errors)
        return self.reject_where(
            cols,
            cols["expression"].is_null().to_numpy(zero_copy_only=False),
            "missing value",
            pc.binary_join_element_wise("no file ", cols["source"], ""),
        )

    # -- values -------------------------------------------------------------------------------
    def parse_numbers(self, cols: dict, names: list[str]) -> dict:
        """Reject rows where a named column holds something other than a number; those become float arrays."""
        try:
            floats = {name: pc.cast(cols[name], pa.float64()).to_numpy(zero_copy_only=False) for name in names}
            if all(np.isfinite(v).all() for v in floats.values()):
                return {**cols, **floats}  # all plain numbers: the pattern check below is not needed
        except pa.ArrowInvalid:
            pass
        failing = {name: not_a_number(cols[name]) for name in names}
        cols = self.reject_failing(cols, failing, "malformed line", "{}={!r} is not a number")
        for name in names:
            cols[name] = pc.cast(cols[name], pa.float64()).to_numpy(zero_copy_only=False)
        return cols

    def map_expressions(self, cols: dict) -> dict:
        labels = self.manifest["labels"]
        names = labels["expression"]
        cols = self.map_labels(cols, ["expression"], names)
        dropped = [("not a face", labels["non_face"])]
        if not self.options.keep_uncertain:
            dropped.append(("no expression", labels["no_expression"]))
        for reason, codes in dropped:
            dropped_names = pa.array([names[c] for c in codes])
            bad = pc.is_in(cols["expression"], value_set=dropped_names).to_numpy(zero_copy_only=False)
            detail = pc.binary_join_element_wise("expression: ", cols["expression"], "")
            cols = self.reject_where(cols, bad, reason, detail)
        return cols

    def affect_values(self, cols: dict) -> dict:
        """Valence and arousal as fixed-decimal texts; the `missing` code (and an absent file) leave the pair out."""
        labels = self.manifest["labels"]
        low, high = labels["affect_range"]
        absent = {k: np.isnan(cols[k]) | (cols[k] == labels["affect_missing"]) for k in AFFECT}
        bad = np.zeros(len(cols["source"]), dtype=bool)
        detail = np.full(len(bad), "", dtype=object)
        for k in AFFECT:
            out = ~absent[k] & ((cols[k] < low) | (cols[k] > high)) & ~bad
            detail[out] = [f"{k}={v:g} outside [{low}, {high}]" for v in cols[k][out]]
            bad |= out
        for k in AFFECT:
            cols[k] = fixed_decimals(cols[k], labels["affect_decimals"], absent[k])
        return self.reject_where(cols, bad, "value out of range", detail)

    # -- CSV release: boxes and images ----------------------------------------------------------
    def crop_boxes(self, cols: dict) -> dict:
        # x, y, width, height -> [left, top, right, bottom]. A box reaching past the top or left edge is
        # clamped to 0; right/bottom are clamped to the image size by the tokenizer, which opens the image.
        x, y, w, h = (np.rint(cols[c]) for c in BOX)
        box = np.stack([np.maximum(x, 0), np.maximum(y, 0), x + w, y + h], axis=1)
        bad = (w <= 0) | (h <= 0) | (box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1])
        bad |= ~(np.abs(box) < 2**31).all(axis=1)  # also NaN / inf
        detail = np.full(len(bad), "", dtype=object)
        detail[bad] = [
            f"face_x={a:g}, face_y={b:g}, face_width={c:g}, face_height={d:g}"
            for a, b, c, d in zip(x[bad], y[bad], w[bad], h[bad])
        ]
        cols["box"] = np.where(bad[:, None], 0, box).astype(np.int64)
        return self.reject_where(cols, bad, "degenerate box", detail)

    def locate_images(self, cols: dict, image_dir: Path) -> dict:
        """Find each path in one listing of the image folders (a name differing only in case, `.JPG`, matches
        too); reject the absent, unsafe and repeated ones."""
        present, paths = self.files_below(image_dir), cols[PATH]
        found = pc.index_in(paths, value_set=present)
        if found.null_count:
            found = pc.coalesce(found, pc.index_in(pc.utf8_lower(paths), value_set=pc.utf8_lower(present)))
        cols["found"] = pc.fill_null(found, -1).to_numpy(zero_copy_only=False)
        cols = self.reject_unsafe(cols, PATH, where=cols["found"] < 0)  # a listed name never holds `..`
        cols = self.reject_where(cols, cols["found"] < 0, "image missing", cols[PATH])
        cols = self.reject_repeats(cols, cols["found"], "duplicate image")
        cols["image"] = prefixed(self.tree.rel(image_dir) + "/", present.take(pa.array(cols["found"])))
        cols["image_id"] = prefixed(f"{self.name}/", stems(cols[PATH]))
        return cols

    def files_below(self, folder: Path) -> pa.Array:
        """`name` and `sub/name` of every file of a folder and its subfolders, sorted (listed once, never opened)."""
        files = self.tree.files(folder)
        subfolders = {sub.name: sub for sub in self.tree.subfolders(folder, hidden=True)}
        names = []
        for name in sorted(self.tree.listing(folder)):
            if name in subfolders:
                names += [f"{name}/{n}" for n in sorted(self.tree.files(subfolders[name]))]
            elif name in files:
                names.append(name)
        return pa.array(names, pa.string())

    def summary(self, table: pa.Table) -> dict:
        summary = super().summary(table)
        if getattr(self, "release", None) == "npy":
            summary["expected"]["official"] = self.manifest["counts"]["official_npy"]
        return summary


def is_missing(values: pa.Array) -> np.ndarray:
    return pc.is_in(values, value_set=pa.array(MISSING)).to_numpy(zero_copy_only=False)


def not_a_number(values: pa.Array) -> np.ndarray:
    """True where a value is not a plain number; a null (an absent npy file) is not wrong: it becomes NaN."""
    return ~pc.fill_null(pc.match_substring_regex(values, NUMBER_TEXT), True).to_numpy(zero_copy_only=False)


def fixed_decimals(values: np.ndarray, decimals: int, absent: np.ndarray) -> pa.Array:
    """Numbers as texts with exactly `decimals` decimals (0.5 -> `0.50`, never `-0.00`); null where absent."""
    scaled = np.where(absent, 0, np.rint(values * 10**decimals)).astype(np.int64)
    magnitude = np.abs(scaled)
    whole = pa.array(magnitude // 10**decimals).cast(pa.string())
    part = pc.utf8_lpad(pa.array(magnitude % 10**decimals).cast(pa.string()), decimals, "0")
    text = pc.binary_join_element_wise(pc.if_else(pa.array(scaled < 0), "-", ""), whole, ".", part, "")
    return pc.if_else(pa.array(absent), pa.scalar(None, pa.string()), text)


CONVERTER = AffectNet
