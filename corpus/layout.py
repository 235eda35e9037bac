"""The corpus layout (`build-corpus` writes it, `tokenize-images` and `preview` read it): the one place
that names its files and columns.

    CORPUS/pairs/part-NNNNN.parquet   the face-text pairs, RECORD_SCHEMA, corpus order
    CORPUS/images.parquet             one row per unique image_id (IMAGE_SCHEMA), sorted
    CORPUS/rejects.jsonl              the pairs the corpus dropped, with reasons
    CORPUS/stats.json, STATS.md, pairs_per_dataset.png, README.md (dataset card)
    CORPUS/build-config.json          the BuildConfig of the run
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from common.errors import UserError
from converters.helpers.schema import RECORD_SCHEMA

PAIRS_FOLDER = "pairs"
IMAGES_FILE = "images.parquet"
REJECTS_FILE = "rejects.jsonl"
STATS_JSON = "stats.json"
STATS_MD = "STATS.md"
CHART_PNG = "pairs_per_dataset.png"
CARD_FILE = "README.md"
CONFIG_FILE = "build-config.json"

IMAGE_SCHEMA = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("image", pa.string(), nullable=False),
    pa.field("box", RECORD_SCHEMA.field("box").type),
    pa.field("split", pa.string(), nullable=False),
])


def pair_part_name(part: int) -> str:
    return f"part-{part:05d}.parquet"


def looks_complete(folder: Path) -> bool:
    """A finished corpus: the statistics and the pairs folder are there (only a finished build renames them in)."""
    return (folder / STATS_JSON).is_file() and (folder / PAIRS_FOLDER).is_dir()


def images_file(corpus: Path) -> Path:
    return Path(corpus) / IMAGES_FILE


def read_images(corpus: Path, columns: list[str] | None = None) -> pa.Table:
    """CORPUS/images.parquet (the named columns, all by default), checked for the columns asked for."""
    path = images_file(corpus)
    if not path.is_file():
        raise UserError(f"{corpus}: no {IMAGES_FILE}; is it a folder written by build-corpus?")
    wanted = columns or IMAGE_SCHEMA.names
    table = pq.read_table(path)
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    return table.select(wanted)


def pair_files(corpus: Path) -> list[Path]:
    files = sorted((Path(corpus) / PAIRS_FOLDER).glob("*.parquet"))
    if not files:
        raise UserError(f"{corpus}: no {PAIRS_FOLDER}/*.parquet")
    return files
