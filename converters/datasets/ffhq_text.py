"""FFHQ-Text: nine manual captions per FFHQ face -> one `caption` row per caption, `image_id` `ffhq/<id>`.

The request-only release follows the CUB/AttnGAN layout (the README lists `Image`, `Text`, `Train`,
`Test`, `images.txt`, `bounding_boxes.txt`): `Text/<id>.txt`, `Image/<id>.png`, and
`Train/filenames.pickle`, `Test/filenames.pickle` (500 / 260 names). Folder names are matched
case-insensitively. The boxes are not used: FFHQ images are aligned face crops, used whole, like
FFHQ everywhere else. The paper counts 8k pairs; the release holds 760 x 9 = 6,840: reported, never padded.
"""

from __future__ import annotations

from ..helpers import captions
from ..helpers.base import Converter
from ..helpers.root import IMAGE_EXTENSIONS

TEXT_DIRS = ("text", "texts", "captions")
IMAGE_DIRS = ("image", "images", "img")


class FFHQText(Converter):
    name = "ffhq_text"

    def convert(self):
        labels = self.manifest["labels"]
        text_dir = self.tree.innermost(self.tree.find_dir(*TEXT_DIRS), {captions.CAPTION_SUFFIX})
        caps = captions.read_captions(self, text_dir, labels["captions_per_image"])
        captions.numbered_ids(self, caps, "ffhq/", labels["ffhq_images"], labels["id_digits"], "an FFHQ image number")
        lists = {
            split: captions.read_split_pickle(captions.find_split_pickle(self, split)) for split in ("train", "test")
        }
        captions.assign_splits(self, caps, lists)
        image_dir = self.tree.innermost(self.tree.find_dir(*IMAGE_DIRS), IMAGE_EXTENSIONS)
        captions.attach_images(self, caps, image_dir, ".png")
        yield captions.caption_table(self, caps)


CONVERTER = FFHQText
