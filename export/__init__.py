"""export: the corpus for other face-text systems, one small module per format behind `FORMATS`.

    python3 cli.py export --corpus corpus/ --format imagefolder --out hf/ [--size 512] [--attribute-text sentence]

`export.core` plans the work (pairs -> faces -> units of about `pairs_per_unit` pairs per split), reads each
face exactly as `tokenize-images` does (`facetokens.images`) and hands it to the format's writer; a format
module only says where files go and what each line or sample holds.
"""

from __future__ import annotations

import importlib
from types import ModuleType

FORMATS = {  # --format NAME: the module that writes it (imported only when used)
    "imagefolder": "export.imagefolder",  # Hugging Face `datasets` ImageFolder / diffusers train_text_to_image
    "feedface": "export.feedface",  # FeedFace's PeopleDataset JSONL (path, caption, width, height)
    "webdataset": "export.wds",  # img2dataset-style tar shards: KEY.jpg, KEY.txt, KEY.json
}


def load_format(name: str) -> ModuleType:
    return importlib.import_module(FORMATS[name])
