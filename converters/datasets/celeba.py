"""CelebA: 40 binary attributes per aligned face -> `celeba gender: male; 5 o clock shadow: false; ...`.

Reads the official layout (`list_attr_celeba.txt`: a count line, a names line with a trailing
space, then `000001.jpg -1  1 ...` in width-2 fields) and the Kaggle mirror (CSV files and a
doubly nested `img_align_celeba/img_align_celeba/`). Split from `list_eval_partition`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from common.errors import UserError

from ..helpers.base import Converter
from ..helpers.celeba_family import PARTITION_FILES, read_partition
from ..helpers.rows import attribute_columns, key_name, make_table, map_values, prefixed, stems
from ..helpers.tables import Columns, head_lines, read_csv, read_table

ATTR_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")
IDENTITY_FILE = "identity_CelebA.txt"
IMAGE_DIR = "img_align_celeba"


class CelebA(Converter):
    name = "celeba"

    def convert(self):
        labels = self.manifest["labels"]
        attrs = self.read_attributes(self.tree.find_file(*ATTR_FILES), labels["attributes"])
        self.count_records(attrs.records)
        name = attrs["image_id"] if "image_id" in attrs.names else attrs["image"]  # Kaggle CSV / official
        cols = {"source": attrs.sources(), "name": name, **{a: attrs[a] for a in labels["attributes"]}}
        cols = self.reject_repeats(cols, cols["name"])
        cols = self.map_labels(
            cols, labels["attributes"], labels["values"], encoded=True
        )  # CelebA's -1/1 -> false/true

        image_dir = self.image_dir()
        cols["image"] = prefixed(self.tree.rel(image_dir) + "/", cols["name"])
        cols = self.drop_missing_images(cols, [image_dir])

        cols["split"] = self.splits(cols["name"], labels["partition"])
        cols = self.reject_where(
            cols,
            cols["split"].is_null().to_numpy(zero_copy_only=False),
            "no split",
            "image absent from list_eval_partition or with an unknown partition value",
        )
        text, attributes = self.texts(cols, labels)
        yield make_table(
            len(cols["name"]),
            dataset=self.name,
            image=cols["image"],
            image_id=prefixed("celeba/", stems(cols["name"])),
            split=cols["split"],
            kind="attributes",
            text=text,
            attributes=attributes,
            source=cols["source"],
            person=self.identities(cols["name"]),
        )

    def read_attributes(self, path: Path, expected: list[str]) -> Columns:
        rel = self.tree.rel(path)
        if path.suffix.lower() == ".csv":
            return read_csv(path, rel, ["image_id", *expected], self.reject)
        head = head_lines(path, 2)
        if len(head) < 2 or not head[0].strip().isdigit():
            raise UserError(f"{path}:1: expected the image count on line 1 and the 40 attribute names on line 2")
        names = head[1].split()
        if names != expected:
            raise UserError(
                f"{path}:2: attribute names differ from CelebA's 40 "
                f"(first difference: {next((n for n, e in zip(names, expected) if n != e), len(names))})"
            )
        table = read_table(path, rel, ["image", *expected], self.reject, skip_lines=2)
        declared = int(head[0].strip())
        if declared != table.records:
            self.notes.append(f"{rel} declares {declared} images on line 1 but holds a different number of lines")
        return table

    def image_dir(self) -> Path:
        return self.tree.unwrap(self.tree.find_dir(IMAGE_DIR), IMAGE_DIR)  # Kaggle: img_align_celeba/img_align_celeba/

    def splits(self, names: pa.Array, partition: dict) -> pa.Array:
        path = self.tree.find_file(*PARTITION_FILES)
        keys, splits = read_partition(path, self.tree.rel(path), partition)
        return splits.take(pc.index_in(names, value_set=keys))

    def identities(self, names: pa.Array) -> pa.Array | None:
        path = self.tree.find_file(IDENTITY_FILE, required=False)
        if path is None:
            return None
        rel, malformed = self.tree.rel(path), []
        table = read_table(path, rel, ["image", "identity"], lambda source, *_: malformed.append(source))
        if malformed:  # identity lines are not records: a bad one costs its face the person, said here
            self.notes.append(
                f"{rel}: {len(malformed)} malformed lines ignored (e.g. {malformed[0]}); their faces have no person"
            )
        person = prefixed("celeba:", table["identity"]).take(pc.index_in(names, value_set=table["image"]))
        if person.null_count:
            self.notes.append(f"{person.null_count} faces have no identity in {rel}: their person is null")
        return person

    def texts(self, cols: dict, labels: dict) -> tuple[pa.Array, pa.Array]:
        order = labels["first"] + [a for a in labels["attributes"] if a not in labels["first"]]
        keys, values = [], []
        for a in order:
            renamed = labels["renamed"].get(a)
            keys.append(renamed["key"] if renamed else key_name(a))
            values.append(map_values(cols[a], {k: v for k, v in renamed.items() if k != "key"}) if renamed else cols[a])
        return attribute_columns(self.name, keys, values)


CONVERTER = CelebA
