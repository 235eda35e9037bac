"""CelebA-Text-HQ: manual captions (up to ten) per CelebA-HQ face -> one `caption` row per caption.

Reads `captions/<k>.txt` and the split lists `data_flist/train.flist`, `test.flist` (one image path per
line; the basename names the face). The images are not in this download: they are CelebAMask-HQ's
`CelebA-HQ-img/<k>.jpg` (often copied to `CelebAimg/`), found under the root or given as `images=PATH`.

Images outside the root: `image` paths must be relative to the summary's `root`, so the root becomes
the deepest folder holding both the dataset and the images (their common parent); `image` and
`source` are then relative to it, and the summary notes it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pyarrow as pa

from common.errors import UserError

from ..helpers import captions
from ..helpers.base import Converter
from ..helpers.root import IMAGE_EXTENSIONS, DatasetRoot
from ..helpers.tables import read_text

CAPTION_DIRS = ("captions", "caption", "text")
IMAGE_DIRS = ("CelebA-HQ-img", "CelebAimg")
SPLIT_FILES = {"train": "train.flist", "test": "test.flist"}


@dataclasses.dataclass
class Options:
    images: Path | None = None  # CelebAMask-HQ's CelebA-HQ-img folder (else searched under the root)
    mapping: Path | None = None  # CelebAMask-HQ's CelebA-HQ-to-CelebA-mapping.txt (else searched)


class CelebATextHQ(Converter):
    name = "celeba_text_hq"
    Options = Options

    def convert(self):
        labels = self.manifest["labels"]
        caption_dir = self.tree.innermost(self.tree.find_dir(*CAPTION_DIRS), {captions.CAPTION_SUFFIX})
        lists = {split: self.read_flist(self.tree.find_file(name)) for split, name in SPLIT_FILES.items()}
        image_dir = self.image_dir()
        mapping = captions.find_mapping(self, self.options.mapping, (*beside(image_dir), self.root))
        self.widen_root(image_dir)
        caps = captions.read_captions(self, caption_dir, labels["captions_per_image"])
        hq = captions.numbered_ids(self, caps, "celeba_hq/", labels["hq_images"], 1, "a CelebA-HQ index")
        captions.assign_splits(self, caps, lists)
        captions.attach_images(self, caps, image_dir, ".jpg")
        yield captions.caption_table(self, caps, captions.celeba_origins(self, caps, hq, mapping))

    def read_flist(self, path: Path) -> pa.Array:
        """The stems named by an .flist (`../data/CelebAimg/12.jpg` -> `12`); blank lines skipped."""
        lines = [line.strip() for line in read_text(path).splitlines()]
        return captions.stem_of(pa.array([line for line in lines if line], pa.string()))

    def image_dir(self) -> Path:
        if self.options.images is None:
            folder = self.tree.find_dir(*IMAGE_DIRS, required=False)
            if folder is None:
                raise UserError(
                    f"{self.name}: no folder named {' or '.join(IMAGE_DIRS)} under {self.root}; the images "
                    "are CelebAMask-HQ's CelebA-HQ-img: pass images=PATH"
                )
        else:
            folder = self.tree.given(
                self.options.images, "images", folder=True, expected="CelebAMask-HQ's CelebA-HQ-img/"
            )
        return self.tree.innermost(folder, IMAGE_EXTENSIONS)

    def widen_root(self, image_dir: Path) -> None:
        if image_dir.is_relative_to(self.root):
            return
        dataset = self.root
        self.tree = DatasetRoot(Path(os.path.commonpath([dataset, image_dir])), self.name)
        self.notes.append(
            f"the images lie outside the dataset folder {dataset}: image and source paths are relative "
            f"to their common parent {self.root}"
        )


def beside(image_dir: Path) -> tuple[Path, ...]:
    """CelebAMask-HQ keeps the mapping file next to CelebA-HQ-img/: search there first, if that is CelebAMask-HQ."""
    return (image_dir.parent,) if image_dir.parent.name.lower().startswith("celebamask") else ()


CONVERTER = CelebATextHQ
