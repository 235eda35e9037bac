"""The corpus layout: the one module that names, writes and reads the corpus files.

`build-corpus` decides the content (`corpus.build`, `corpus.stats`, `corpus.card`) and hands it to the
writers here; `tokenize-images`, `preview` and the demo read through the readers here.

    CORPUS/pairs/part-NNNNN.parquet   the face-text pairs, RECORD_SCHEMA, corpus order
    CORPUS/images.parquet             one row per unique image_id (IMAGE_SCHEMA), sorted
    CORPUS/rejects.jsonl              the pairs the corpus dropped, with reasons
    CORPUS/stats.json, STATS.md, pairs_per_dataset.png, README.md (dataset card)
    CORPUS/build-config.json          the BuildConfig of the run

A corpus is complete when every one of these is there (`missing_files`, `is_complete`): build-corpus
writes them into a temporary folder published whole (`common.fileio.atomic_folder`), so only a finished
build is ever complete.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from common.errors import UserError
from common.fileio import atomic_path, write_json, write_jsonl, write_parquet, write_text
from converters.schema import RECORD_SCHEMA

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


# -- the completeness check --------------------------------------------------------------------
def missing_files(folder: Path) -> list[str]:
    """The layout's files that `folder` lacks, in layout order; empty for a complete corpus."""
    folder = Path(folder)
    files = [f for f in (IMAGES_FILE, REJECTS_FILE, STATS_JSON, STATS_MD, CHART_PNG, CARD_FILE, CONFIG_FILE)
             if not (folder / f).is_file()]
    parts = sorted((folder / PAIRS_FOLDER).glob("part-*.parquet")) if (folder / PAIRS_FOLDER).is_dir() else []
    return ([] if parts else [f"{PAIRS_FOLDER}/part-*.parquet"]) + files


def is_complete(folder: Path) -> bool:
    """A finished corpus: every file of the layout is there."""
    return Path(folder).is_dir() and not missing_files(folder)


# -- writers (build-corpus) --------------------------------------------------------------------
def write_pair_part(folder: Path, part: int, table: pa.Table) -> None:
    """CORPUS/pairs/part-NNNNN.parquet."""
    write_parquet(table, pairs_folder(folder) / pair_part_name(part))


def pairs_folder(folder: Path) -> Path:
    return Path(folder) / PAIRS_FOLDER


def write_tables(folder: Path, images: pa.Table, rejects: list[dict], build_config: dict) -> None:
    """images.parquet, rejects.jsonl and build-config.json."""
    write_images(folder, images)
    write_jsonl(rejects, Path(folder) / REJECTS_FILE)
    write_json(build_config, Path(folder) / CONFIG_FILE)


def write_images(folder: Path, images: pa.Table) -> None:
    write_parquet(images, images_file(folder))


def write_statistics(folder: Path, stats: dict, markdown: str, chart) -> None:
    """stats.json, STATS.md and the chart (a matplotlib Figure, saved as PNG without the time or version)."""
    write_json(stats, Path(folder) / STATS_JSON)
    write_text(markdown, Path(folder) / STATS_MD)
    with atomic_path(Path(folder) / CHART_PNG) as tmp:
        chart.savefig(tmp, format="png", metadata={"Software": None})


def write_card(folder: Path, text: str) -> None:
    """README.md, the dataset card."""
    write_text(text, Path(folder) / CARD_FILE)


# -- readers (tokenize-images, preview, the demo) ----------------------------------------------


def chart_file(corpus: Path) -> Path:
    """The pairs-per-dataset chart (PNG)."""
    return Path(corpus) / CHART_PNG


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
