"""CACD: one age per celebrity photo -> `cacd age: 53`.

Reads the struct `celebrityImageData` of `celebrity2000_meta.mat` (MATLAB v5, scipy) or, when only
that is there, of the big `celebrity2000.mat` (MATLAB v7.3 = HDF5, h5py), fields by name: age,
identity, rank, name (the file name in `CACD2000/`). Work is on whole columns; only the names are
decoded one by one. Split by the celebrity's rank, as the CARC protocol does (manifest: split_by_rank).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import UserError

from ..helpers.base import Converter
from ..helpers.matfiles import is_v73, read_struct
from ..helpers.root import IMAGE_NAME
from ..helpers.rows import attribute_columns, make_table, prefixed, stems

META_FILE = "celebrity2000_meta.mat"  # MATLAB v5, small: preferred
FULL_FILE = "celebrity2000.mat"  # MATLAB v7.3 with the features
STRUCT = "celebrityImageData"
NUMBER_FIELDS = ("age", "identity", "rank")
NAME_FIELD = "name"
IMAGE_DIR = "CACD2000"


class CACD(Converter):
    name = "cacd"

    def convert(self):
        labels = self.manifest["labels"]
        cols = self.read_records(self.annotation_file())
        self.count_records(len(cols["source"]))
        image_dir = self.image_dir()
        self.note_unlisted_images(image_dir, cols["name"])
        cols = self.reject_bad_records(cols, labels)

        cols["image"] = prefixed(self.tree.rel(image_dir) + "/", cols["name"])
        cols = self.drop_missing_images(cols, [image_dir])

        age = pa.array(cols["age"].astype(np.int64)).cast(pa.string())
        self.note_name_age_mismatch(cols["name"], age)
        text, attributes = attribute_columns(self.name, ["age"], [age])
        identity = pa.array(cols["identity"].astype(np.int64)).cast(pa.string())
        yield make_table(
            len(cols["name"]),
            dataset=self.name,
            image=cols["image"],
            image_id=prefixed("cacd/", stems(cols["name"])),
            split=self.splits(cols["rank"], labels),
            kind="attributes",
            text=text,
            attributes=attributes,
            source=cols["source"],
            person=prefixed("cacd:", identity),
        )

    def annotation_file(self) -> Path:
        meta = self.tree.find_file(META_FILE, required=False)
        if meta is not None:
            return meta
        return self.tree.find_file(META_FILE, FULL_FILE)  # the error, if any, names both

    def read_records(self, path: Path) -> dict:
        """The fields we need, one entry per image, with `file:celebrityImageData(i)` sources."""
        rel = self.tree.rel(path)
        with read_struct(path, STRUCT) as struct:
            cols = {field: struct.numbers(field) for field in NUMBER_FIELDS}
            cols["name"] = struct.strings(NAME_FIELD)
        lengths = {field: len(values) for field, values in cols.items()}
        if len(set(lengths.values())) != 1:
            raise UserError(
                f"{path}: fields of {STRUCT} differ in length "
                f"({', '.join(f'{k} {v}' for k, v in lengths.items())}); expected one entry per image"
            )
        n = lengths["name"]
        index = pa.array(np.arange(1, n + 1)).cast(pa.string())
        cols["source"] = pc.binary_join_element_wise(f"{rel}:{STRUCT}(", index, ")", "")
        kind = "MATLAB v7.3 (HDF5)" if is_v73(path) else "MATLAB v5"
        self.notes.append(f"read {n} entries of {STRUCT} from {rel} ({kind})")
        return cols

    def reject_bad_records(self, cols: dict, labels: dict) -> dict:
        name_valid = cols["name"].is_valid().to_numpy(zero_copy_only=False)
        cols = self.reject_where(cols, ~name_valid, "malformed record", "name is not a string")
        empty = pc.equal(cols["name"], "").to_numpy(zero_copy_only=False)
        cols = self.reject_where(cols, empty, "missing value", "name is empty")
        for field in NUMBER_FIELDS:
            cols = self.reject_where(cols, np.isnan(cols[field]), "missing value", f"{field} is NaN")
        cols = self.reject_out_of_range(cols, "age", labels["age"])
        cols = self.reject_out_of_range(cols, "rank", labels["rank"])
        cols = self.reject_out_of_range(cols, "identity", {"min": 1, "max": np.inf})
        return self.reject_repeats(cols, cols["name"])

    def reject_out_of_range(self, cols: dict, field: str, bounds: dict) -> dict:
        values = cols[field]
        bad = (values != np.round(values)) | (values < bounds["min"]) | (values > bounds["max"])
        detail = np.full(len(values), "", dtype=object)
        detail[bad] = [f"{field}={v:g}" for v in values[bad]]
        return self.reject_where(cols, bad, "unknown label value", detail.tolist())

    def image_dir(self) -> Path:
        return self.tree.unwrap(self.tree.find_dir(IMAGE_DIR), IMAGE_DIR)  # some users have CACD2000/CACD2000/

    def splits(self, rank: np.ndarray, labels: dict) -> pa.Array:
        ranges = labels["split_by_rank"]
        conditions = [(rank >= low) & (rank <= high) for low, high in ranges.values()]
        choice = np.select(conditions, list(ranges), default=labels["other_ranks"])
        return pa.array(choice.tolist(), pa.string())

    def note_unlisted_images(self, image_dir: Path, names: pa.Array) -> None:
        files = pa.array(list(self.tree.files(image_dir)), pa.string())
        images = files.filter(pc.match_substring_regex(files, IMAGE_NAME, ignore_case=True))
        unlisted = len(images) - (pc.sum(pc.is_in(images, value_set=names)).as_py() or 0)
        if unlisted:
            self.notes.append(
                f"{unlisted} images in {self.tree.rel(image_dir)}/ are not named in {STRUCT} (not converted)"
            )

    def note_name_age_mismatch(self, names: pa.Array, age: pa.Array) -> None:
        prefix = pc.struct_field(pc.extract_regex(names, r"^(?P<age>\d+)_"), "age")
        differ = pc.sum(pc.not_equal(pc.cast(pc.cast(prefix, pa.int64()), pa.string()), age)).as_py() or 0
        if differ:
            self.notes.append(f"{differ} file names start with an age other than the age field (the field is used)")


CONVERTER = CACD
