"""FFHQ-Text: nine manual captions per FFHQ face -> one `caption` row per caption, `image_id` `ffhq/<id>`.

The request-only release follows the CUB/AttnGAN layout (the README lists `Image`, `Text`, `Train`,
`Test`, `images.txt`, `bounding_boxes.txt`): `Text/<id>.txt`, `Image/<id>.png`, and
`Train/filenames.pickle`, `Test/filenames.pickle` (500 / 260 names). Folder names are matched
case-insensitively. The boxes are not used: FFHQ images are aligned face crops, used whole, like
FFHQ everywhere else. The paper counts 8k pairs; the release holds 760 x 9 = 6,840: reported, never padded.
"""
from __future__ import annotations

from .base import Converter
from .captions import (
    CAPTION_SUFFIX,
    assign_splits,
    attach_images,
    caption_table,
    find_split_pickle,
    innermost,
    numbered_ids,
    read_captions,
    read_split_pickle,
)
from .root import IMAGE_EXTENSIONS

TEXT_DIRS = ("text", "texts", "captions")
IMAGE_DIRS = ("image", "images", "img")


class FFHQText(Converter):
    name = "ffhq_text"

    def convert(self):
        labels = self.manifest["labels"]
        caps = read_captions(self, innermost(self.tree.find_dir(*TEXT_DIRS), {CAPTION_SUFFIX}), labels["captions_per_image"])
        numbered_ids(self, caps, "ffhq/", labels["ffhq_images"], labels["id_digits"], "an FFHQ image number")
        lists = {split: read_split_pickle(find_split_pickle(self, split)) for split in ("train", "test")}
        assign_splits(self, caps, lists)
        attach_images(self, caps, innermost(self.tree.find_dir(*IMAGE_DIRS), IMAGE_EXTENSIONS), ".png")
        yield caption_table(self, caps)


CONVERTER = FFHQText
