"""The corpus layout: the one module that names, writes and reads the corpus files.

`build-corpus` decides the content (`corpus.build`, `corpus.stats`, `corpus.card`) and hands it to the
writers here; `tokenize-images`, `preview` and the demo read through the readers here.

    CORPUS/pairs/SPLIT-NNNNN.parquet  the face-text pairs of each split (train, val, test), RECORD_SCHEMA, corpus order
    CORPUS/images.parquet             one row per unique image_id (STORED_IMAGE_SCHEMA), sorted
    CORPUS/roots.yaml                 each dataset's root: images.parquet's `image` is relative to it (users edit it
                                      to read the images from another place; a relative root is taken from CORPUS)
    CORPUS/rejects.jsonl              the pairs the corpus dropped, with reasons
    CORPUS/stats.json, STATS.md, pairs_per_dataset.png, README.md (dataset card)
    CORPUS/build-config.json          the BuildConfig of the run

A corpus is complete when every one of these is there (`missing_files`, `is_complete`): build-corpus
writes them into a temporary folder published whole (`common.fileio.atomic_folder`), so only a finished
build is ever complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from common.errors import UserError
from common.fileio import atomic_path, read_parquet, write_json, write_jsonl, write_parquet, write_text
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

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("image", pa.string(), nullable=False),
        pa.field("box", RECORD_SCHEMA.field("box").type),
        pa.field("split", pa.string(), nullable=False),
    ]
)  # what read_images returns: `path` is the file to read, that dataset's root (roots.yaml) + `image`
STORED_IMAGE_SCHEMA = pa.schema([field for field in IMAGE_SCHEMA if field.name != "path"])  # images.parquet
ROOTS_HEADER = """\
# Where each dataset's images are: the `image` paths of images.parquet are relative to these roots.
# Edit a root to read the images from another place; a relative root is taken from this folder.
"""


def pair_part_name(split: str, part: int) -> str:
    return f"{split}-{part:05d}.parquet"


def write_roots(roots: dict[str, str], folder: Path) -> None:
    """CORPUS/roots.yaml: {dataset: root}, under a header that says how to edit it."""
    write_text(ROOTS_HEADER + yaml.safe_dump(roots, sort_keys=False, allow_unicode=True), Path(folder) / ROOTS_FILE)


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


# -- the completeness check --------------------------------------------------------------------
def missing_files(folder: Path) -> list[str]:
    """The layout's files that `folder` lacks, in layout order (at least one pairs file per split); empty for a
    complete corpus. A corpus of the layout before per-split pairs (`pairs/part-*.parquet`, images.parquet
    storing `path`, no roots.yaml) is complete with its own files."""
    folder, pairs = Path(folder), Path(folder) / PAIRS_FOLDER
    older = any(pairs.glob("part-*.parquet"))
    lacking_pairs = (
        []
        if older
        else [f"{PAIRS_FOLDER}/{split}-*.parquet" for split in SPLITS if not any(pairs.glob(f"{split}-*.parquet"))]
    )
    names = (
        IMAGES_FILE,
        *(() if older else (ROOTS_FILE,)),
        REJECTS_FILE,
        STATS_JSON,
        STATS_MD,
        CHART_PNG,
        CARD_FILE,
        CONFIG_FILE,
    )
    return lacking_pairs + [name for name in names if not (folder / name).is_file()]


def is_complete(folder: Path) -> bool:
    """A finished corpus: every file of the layout is there."""
    return Path(folder).is_dir() and not missing_files(folder)


# -- writers (build-corpus) --------------------------------------------------------------------
def write_pair_part(folder: Path, split: str, part: int, table: pa.Table) -> None:
    """CORPUS/pairs/SPLIT-NNNNN.parquet."""
    write_parquet(table, pairs_folder(folder) / pair_part_name(split, part))


def pairs_folder(folder: Path) -> Path:
    return Path(folder) / PAIRS_FOLDER


def write_tables(
    folder: Path, images: pa.Table, roots: dict[str, str], rejects: list[dict], build_config: dict
) -> None:
    """images.parquet, roots.yaml, rejects.jsonl and build-config.json."""
    write_images(folder, images)
    write_roots(roots, folder)
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
    table = read_parquet(path)
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


def read_pair_columns(corpus: Path, columns: list[str]):
    """Yield each pair file's `columns` as Python lists, in corpus order: the one reader of the pair files."""
    for file in pair_files(corpus):
        table = read_parquet(file, columns)
        yield [table.column(c).to_pylist() for c in columns]
