"""feedface: one JSONL per split with the fields FeedFace's training dataset reads, and the faces.

    DIR/train.jsonl, DIR/validation.jsonl, DIR/test.jsonl   one line per face-caption pair
    DIR/images/train/celeba/000001.jpg                       the face, cropped and resized as tokenize-images does

FeedFace (github.com/Xiang-cd/FeedFace, `libs/extra_cond_data.py`, `PeopleDataset`) reads a JSONL whose lines
hold `path` (the full image path), `caption`, `width` and `height` (FIELDS below), and adds `mask_path`,
`bbox` and `square_bbox` from its own face parsing step (`libs/make_data.py`, run on DIR/images/SPLIT/):
masks and boxes are not made here. Each line also carries image_id, dataset, kind, split and attribute_text.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.records import HUB_SPLIT_NAMES

from .core import JsonlParts, Unit, assemble_parts, caption_record

LINKS = True
FIELDS = ("path", "caption", "width", "height")  # what PeopleDataset's input JSONL names
IMAGES_FOLDER = "images"


def split_file(out: Path, split: str) -> Path:
    return out / f"{HUB_SPLIT_NAMES[split]}.jsonl"


def unit_writer(out: Path, unit: Unit, config) -> JsonlParts:
    def line(file: Path, image, record: dict) -> dict:
        values = (os.path.abspath(file), record["text"], image.width, image.height)  # a link stays a link
        return {**dict(zip(FIELDS, values)), **caption_record(record)}

    return JsonlParts(out, unit, out / IMAGES_FOLDER / HUB_SPLIT_NAMES[unit.split], line)


def finish_split(out: Path, split: str, units: list[Unit]) -> None:
    assemble_parts(out, split, units, split_file(out, split))
