"""ExpW: one face per line of `label.lst` -> `expw expression: happy`, cropped from its full scene.

`label/label.lst` has no header and eight space-separated columns, and writes the box in the
order top, left, right, bottom. Several faces share one scene (`image/origin/<name>.jpg`), so a
face is keyed by scene name + face id. There is no official split: it is hashed from the scene's
name, so all faces of one picture land in the same split.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import UserError
from common.splits import hash_split

from ..helpers.base import Converter
from ..helpers.rows import NUMBER_TEXT, attribute_columns, box_column, make_table, prefixed, stems
from ..helpers.tables import read_table

LABEL_FILE = "label.lst"
IMAGE_DIR = "origin"
COLUMNS = [
    "image_name",
    "face_id_in_image",
    "face_box_top",
    "face_box_left",
    "face_box_right",
    "face_box_bottom",
    "face_box_cofidence",
    "expression_label",
]  # sic: the README's spelling
BOX = ["face_box_left", "face_box_top", "face_box_right", "face_box_bottom"]  # our [left, top, right, bottom]
PATTERNS = {"face_id_in_image": (r"^\d+$", "not a face number"), **{c: (NUMBER_TEXT, "not a number") for c in BOX}}


class ExpW(Converter):
    name = "expw"

    def convert(self):
        path = self.tree.find_file(LABEL_FILE)
        table = read_table(path, self.tree.rel(path), COLUMNS, self.reject)
        if not len(table):
            raise UserError(f"{path}: no line has the {len(COLUMNS)} space-separated columns {' '.join(COLUMNS)}")
        self.count_records(table.records)
        cols = {"source": table.sources(), **table.columns}
        whole_line = pc.binary_join_element_wise(*[cols[c] for c in COLUMNS], " ")
        cols = self.reject_repeats(cols, whole_line)
        cols = self.parse_fields(cols)
        cols = self.map_labels(cols, ["expression_label"], self.manifest["labels"]["expression"])
        cols = self.drop_degenerate_boxes(cols)
        cols["image_id"] = pc.binary_join_element_wise(
            prefixed("expw/", stems(cols["image_name"])), cols["face_id_in_image"], "_"
        )
        cols = self.reject_repeats(cols, cols["image_id"], "duplicate face")  # same face id, other values

        image_dir = self.tree.find_dir(IMAGE_DIR)
        cols["image"] = prefixed(self.tree.rel(image_dir) + "/", cols["image_name"])
        cols = self.drop_missing_images(cols, [image_dir])
        text, attributes = attribute_columns(self.name, ["expression"], [cols["expression_label"]])
        n = len(cols["source"])
        yield make_table(
            n,
            dataset=self.name,
            image=cols["image"],
            image_id=cols["image_id"],
            box=box_column(np.stack([cols[c] for c in BOX], axis=1), n),
            split=hash_split(cols["image_name"]),
            kind="attributes",
            text=text,
            attributes=attributes,
            source=cols["source"],
        )

    def parse_fields(self, cols: dict) -> dict:
        """Reject lines whose face id or box is not a number; the box columns become float arrays."""
        wrong = {
            name: ~pc.match_substring_regex(cols[name], pattern).to_numpy(zero_copy_only=False)
            for name, (pattern, _) in PATTERNS.items()
        }
        cols = self.reject_failing(
            cols, wrong, "malformed line", {name: f"{{}}={{!r}} is {what}" for name, (_, what) in PATTERNS.items()}
        )
        for name in BOX:
            cols[name] = pc.cast(cols[name], pa.float64()).to_numpy(zero_copy_only=False)
        return cols

    def drop_degenerate_boxes(self, cols: dict) -> dict:
        # Negative coordinates are clamped to 0 here. Clamping right/bottom to the image size needs the
        # image's size, which only opening it tells: the tokenizer does that when it reads the image
        # (opening ~90k full scenes here would cost minutes).
        box = np.maximum(np.rint(np.stack([cols[c] for c in BOX], axis=1)), 0)
        bad = (box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1]) | ~(box < 2**31).all(axis=1)
        detail = np.full(len(bad), "", dtype=object)
        detail[bad] = [
            f"left={left:g}, top={top:g}, right={right:g}, bottom={bottom:g}" for left, top, right, bottom in box[bad]
        ]
        for i, name in enumerate(BOX):
            cols[name] = np.where(bad, 0, box[:, i]).astype(np.int64)
        return self.reject_where(cols, bad, "degenerate box", pa.array(detail.tolist(), pa.string()))


CONVERTER = ExpW
