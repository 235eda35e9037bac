"""MM-CelebA-HQ: ten generated captions per CelebA-HQ face -> one `caption` row per caption.

Reads `text/<k>.txt` (or `text/celeba-caption/<k>.txt`), `image/<k>.jpg` and the split lists
`train/filenames.pickle`, `test/filenames.pickle`. The released pickles may be swapped (the author
confirmed it): the official split is train 0-23999, test 24000-29999, so the pickles are checked by
content and put back the right way round, with a note in the summary.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..helpers import captions
from ..helpers.base import Converter
from ..helpers.root import IMAGE_EXTENSIONS

TEXT_DIRS = ("celeba-caption", "text")
IMAGE_DIRS = ("image", "images", "img", "CelebA-HQ-img")


@dataclasses.dataclass
class Options:
    mapping: Path | None = None  # CelebAMask-HQ's CelebA-HQ-to-CelebA-mapping.txt (else searched under the root)


class MMCelebAHQ(Converter):
    name = "mm_celeba_hq"
    Options = Options

    def convert(self):
        labels = self.manifest["labels"]
        mapping = captions.find_mapping(self, self.options.mapping, (self.root,))
        text_dir = self.tree.innermost(self.tree.find_dir(*TEXT_DIRS), {captions.CAPTION_SUFFIX})
        caps = captions.read_captions(self, text_dir, labels["captions_per_image"])
        hq = captions.numbered_ids(self, caps, "celeba_hq/", labels["hq_images"], 1, "a CelebA-HQ index")
        captions.assign_splits(self, caps, self.split_lists(labels["test_from_index"]))
        image_dir = self.tree.innermost(self.tree.find_dir(*IMAGE_DIRS), IMAGE_EXTENSIONS)
        captions.attach_images(self, caps, image_dir, ".jpg")
        yield captions.caption_table(self, caps, captions.celeba_origins(self, caps, hq, mapping))

    def split_lists(self, test_from: int) -> dict[str, pa.Array]:
        paths = {split: captions.find_split_pickle(self, split) for split in ("train", "test")}
        lists = {split: captions.read_split_pickle(path) for split, path in paths.items()}
        train_high, test_high = (share_at_or_above(lists[s], test_from) for s in ("train", "test"))
        if train_high > 0.5 > test_high:
            self.notes.append(
                f"the split pickles are swapped ({self.tree.rel(paths['train'])} holds {len(lists['train'])} "
                f"names, mostly indices >= {test_from}): corrected, train = indices < {test_from}"
            )
            return {"train": lists["test"], "test": lists["train"]}
        if train_high > 0 or test_high < 1:
            self.notes.append(
                f"the split pickles do not follow the official rule (train < {test_from} <= test) "
                "for every name; kept as released"
            )
        return lists


def share_at_or_above(names: pa.Array, boundary: int) -> float:
    """Fraction of the numeric names that are CelebA-HQ indices >= boundary (0 when there are none)."""
    numbers = np.array([int(n) for n in names.to_pylist() if n.isdigit()], dtype=np.int64)
    return float((numbers >= boundary).mean()) if len(numbers) else 0.0


CONVERTER = MMCelebAHQ
