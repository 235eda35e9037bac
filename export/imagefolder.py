"""imagefolder: the faces and one `metadata.jsonl` per split, as Hugging Face `datasets` ImageFolder reads them.

    DIR/train/metadata.jsonl                one line per pair: file_name, text, image_id, dataset, kind, split,
                                            attribute_text, caption, width, height
    DIR/train/faces/celeba/000001.jpg       the face, cropped and resized as tokenize-images does (or a link)
    DIR/validation/..., DIR/test/...        (the corpus's `val` is written as `validation`, the name datasets uses)

`datasets.load_dataset("imagefolder", data_dir=DIR)` gives train/validation/test with the columns `image`, `text`
and the rest; diffusers' `train_text_to_image.py --train_data_dir DIR/train` reads it with its default
`--image_column image --caption_column text`. A face with several pairs is one file named by several lines.
"""

from __future__ import annotations

from pathlib import Path

from common.records import HUB_SPLIT_NAMES

from .core import JsonlParts, Unit, assemble_parts, part_file

LINKS = True
METADATA_FILE = "metadata.jsonl"
FACES_FOLDER = "faces"


def split_folder(out: Path, split: str) -> Path:
    return out / HUB_SPLIT_NAMES[split]


def unit_writer(out: Path, unit: Unit, config) -> JsonlParts:
    folder = split_folder(out, unit.split)

    def line(file: Path, image, record: dict) -> dict:
        return {
            "file_name": file.relative_to(folder).as_posix(),
            **record,
            "width": image.width,
            "height": image.height,
        }

    return JsonlParts(out, unit, folder / FACES_FOLDER, line)


def finish_split(out: Path, split: str, units: list[Unit]) -> None:
    """metadata.jsonl of the split; none for a split without a written pair (datasets then has no such split)."""
    if any(part_file(out, u).stat().st_size for u in units):
        assemble_parts(out, split, units, split_folder(out, split) / METADATA_FILE)
