"""A small CORPUS/ folder written by hand in the layout of docs/formats.md, for tokenize and preview tests.

Faces in every image mode and size, with boxes, plus corrupt, truncated, missing and out-of-image faces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from common.records import SPLITS
from converters.fixtures import write_image
from converters.helpers.rows import make_table
from converters.helpers.schema import ATTRIBUTE_TYPE, BOX_TYPE
from corpus import layout

# image_id: (file, mode, size, format, box) -- mode "truncated" / "junk" / "missing" make broken files
FACES = {
    "celeba/000001": ("celeba/000001.jpg", "RGB", (178, 218), "JPEG", None),
    "celeba/000002": ("celeba/000002.jpg", "L", (178, 218), "JPEG", None),
    "celeba/000003": ("celeba/000003.jpg", "truncated", (400, 400), "JPEG", None),
    "cmyk/0001": ("cmyk/0001.jpg", "CMYK", (300, 260), "JPEG", None),
    "expw/photo.1_0": ("expw/photo.1.jpg", "RGB", (1024, 768), "JPEG", [100, 50, 500, 400]),
    "expw/photo.1_1": ("expw/photo.1.jpg", "RGB", (1024, 768), "JPEG", [2000, 2000, 2100, 2100]),
    "ffhq/00001": ("ffhq/00001.png", "RGB", (1024, 1024), "PNG", None),
    "ffhq/00002": ("ffhq/00002.jpg", "RGB", (1024, 1024), "JPEG", None),
    "fs2k/p_1": ("fs2k/p_1.png", "P", (120, 100), "PNG", None),
    "fs2k/rgba_1": ("fs2k/rgba_1.png", "RGBA", (200, 250), "PNG", [-20, -20, 150, 260]),
    "grey16/0001": ("grey16/0001.png", "I;16", (64, 80), "PNG", None),
    "junk/0001": ("junk/0001.jpg", "junk", (0, 0), None, None),
    "missing/0001": ("missing/0001.jpg", "missing", (0, 0), None, None),
}
GOOD = 9
REJECT_REASONS = {
    "celeba/000003": "corrupt",
    "expw/photo.1_1": "bad_box",
    "junk/0001": "not_an_image",
    "missing/0001": "missing",
}


def write_file(path: Path, mode: str, size, fmt) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "missing" or path.exists():
        return
    if mode == "junk":
        path.write_bytes(b"this is not an image\n")
    elif mode == "truncated":
        write_image(path, size, fmt=fmt)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif mode == "I;16":
        ramp = np.linspace(0, 65535, size[0] * size[1]).reshape(size[1], size[0]).astype(np.uint16)
        Image.fromarray(ramp).save(path)
    else:
        write_image(path, size, mode=mode, fmt=fmt)


def write_corpus(folder: Path, faces: dict = FACES) -> Path:
    """A complete CORPUS/: images.parquet, roots.yaml, pairs/SPLIT-00000.parquet (two texts per face: attributes and a
    caption), empty statistics and card."""
    root = Path(folder) / "raw"
    corpus = Path(folder) / "corpus"
    ids = sorted(faces)
    for image_id in ids:
        file, mode, size, fmt, _ = faces[image_id]
        write_file(root / file, mode, size, fmt)
    datasets = [i.split("/")[0] for i in ids]
    splits = ["test" if k % 5 == 4 else "train" for k in range(len(ids))]
    boxes = [faces[i][4] for i in ids]
    images = pa.table(
        {
            "image_id": ids,
            "dataset": datasets,
            "image": [faces[i][0] for i in ids],
            "box": pa.array(boxes, BOX_TYPE),
            "split": splits,
        }
    )
    write_build_files(corpus, images, {name: str(root.resolve()) for name in sorted(set(datasets))})  # `image`: in raw/
    n = 2 * len(ids)
    attributes = [
        [{"key": "gender", "value": "female" if k % 2 else "male"}, {"key": "smiling", "value": "true"}]
        for k in range(len(ids))
    ]
    pairs = make_table(
        n,
        dataset=[d for d in datasets for _ in (0, 1)],
        image=[faces[i][0] for i in ids for _ in (0, 1)],
        image_id=[i for i in ids for _ in (0, 1)],
        box=pa.array([b for b in boxes for _ in (0, 1)], BOX_TYPE),
        split=[s for s in splits for _ in (0, 1)],
        kind=["attributes", "caption"] * len(ids),
        text=[
            t
            for k, d in enumerate(datasets)
            for t in (
                f"{d} gender: {attributes[k][0]['value']}; smiling: true",
                f"a smiling person, face {k} — «ünïcode»",
            )
        ],
        attributes=pa.array([a for k in range(len(ids)) for a in (attributes[k], None)], ATTRIBUTE_TYPE),
        source=[f"anno.txt:{k}" for k in range(n)],
    )
    for split in SPLITS:  # one file per split (val's empty), as build-corpus writes them
        layout.write_pair_part(corpus, split, 0, pairs.filter(pc.equal(pairs.column("split"), split)))
    return corpus


def write_build_files(corpus: Path, images: pa.Table, roots: dict[str, str]) -> None:
    """images.parquet, roots.yaml and, empty, the other files build-corpus writes beside the pairs (rejects,
    build config, statistics, chart, card), through corpus.layout: with the pairs, a complete corpus
    (`layout.is_complete`)."""
    from matplotlib.figure import Figure

    layout.write_tables(corpus, images, roots, [], {})
    layout.write_statistics(corpus, {}, "", Figure())
    layout.write_card(corpus, "")
