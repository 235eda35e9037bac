"""The corpus layout (`build-corpus` writes it, `tokenize-images` and `preview` read it): the one place
that names its files and columns.

    CORPUS/pairs/SPLIT-NNNNN.parquet  the face-text pairs of each split (train, val, test), RECORD_SCHEMA, corpus order
    CORPUS/images.parquet             one row per unique image_id (STORED_IMAGE_SCHEMA), sorted
    CORPUS/roots.yaml                 each dataset's root: images.parquet's `image` is relative to it (users edit it
                                      to read the images from another place; a relative root is taken from CORPUS)
    CORPUS/rejects.jsonl              the pairs the corpus dropped, with reasons
    CORPUS/stats.json, STATS.md, pairs_per_dataset.png, README.md (dataset card)
    CORPUS/build-config.json          the BuildConfig of the run
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from common.errors import UserError
from common.fileio import atomic_path
from common.records import SPLITS
from converters.helpers.schema import RECORD_SCHEMA

PAIRS_FOLDER = "pairs"
IMAGES_FILE = "images.parquet"
REJECTS_FILE = "rejects.jsonl"
STATS_JSON = "stats.json"
STATS_MD = "STATS.md"
CHART_PNG = "pairs_per_dataset.png"
CARD_FILE = "README.md"
CONFIG_FILE = "build-config.json"
ROOTS_FILE = "roots.yaml"

IMAGE_SCHEMA = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("image", pa.string(), nullable=False),
    pa.field("box", RECORD_SCHEMA.field("box").type),
    pa.field("split", pa.string(), nullable=False),
])  # what read_images returns: `path` is the file to read, that dataset's root (roots.yaml) + `image`
STORED_IMAGE_SCHEMA = pa.schema([field for field in IMAGE_SCHEMA if field.name != "path"])  # images.parquet
ROOTS_HEADER = """\
# Where each dataset's images are: the `image` paths of images.parquet are relative to these roots.
# Edit a root to read the images from another place; a relative root is taken from this folder.
"""


def pair_part_name(split: str, part: int) -> str:
    return f"{split}-{part:05d}.parquet"


def write_roots(roots: dict[str, str], folder: Path) -> None:
    with atomic_path(Path(folder) / ROOTS_FILE) as tmp:
        tmp.write_text(ROOTS_HEADER + yaml.safe_dump(roots, sort_keys=False, allow_unicode=True), encoding="utf-8")


def read_roots(corpus: Path) -> dict[str, Path]:
    """CORPUS/roots.yaml as {dataset: root folder}, relative roots resolved from CORPUS."""
    path = Path(corpus) / ROOTS_FILE
    try:
        roots = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(roots, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in roots.items()):
        raise UserError(f"{path}: expected lines of `dataset: /folder/of/its/images`")
    base = Path(corpus).resolve()
    return {name: Path(os.path.normpath(base / Path(root).expanduser())) for name, root in roots.items()}


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
    if "path" in wanted and "path" not in table.column_names:  # (corpora built before roots.yaml stored it)
        table = table.append_column("path", image_paths(corpus, table))
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    return table.select(wanted)


def image_paths(corpus: Path, table: pa.Table) -> pa.ChunkedArray:
    """The file of each row of images.parquet: its dataset's root from roots.yaml + its `image`."""
    if not (Path(corpus) / ROOTS_FILE).is_file():
        raise UserError(f"{corpus}: no {ROOTS_FILE}, which says where each dataset's images are")
    roots = read_roots(corpus)
    names = pc.unique(table.column("dataset")).to_pylist()
    unknown = sorted(set(names) - set(roots))
    if unknown:
        raise UserError(f"{Path(corpus) / ROOTS_FILE}: no root for {', '.join(unknown)} (add `NAME: /its/folder`)")
    root_of = pa.array([str(roots[n]) for n in names], pa.string())
    chosen = root_of.take(pc.index_in(table.column("dataset"), value_set=pa.array(names, pa.string())))
    return pc.binary_join_element_wise(chosen, table.column("image"), "/")


def pair_files(corpus: Path) -> list[Path]:
    """The pair files in corpus order: the train files, then val, then test (files of older layouts first)."""
    rank = {split: k for k, split in enumerate(SPLITS)}
    found = (Path(corpus) / PAIRS_FOLDER).glob("*.parquet")
    files = sorted(found, key=lambda p: (rank.get(p.name.split("-")[0], -1), p.name))
    if not files:
        raise UserError(f"{corpus}: no {PAIRS_FOLDER}/*.parquet")
    return files
