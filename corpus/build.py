"""build-corpus: the converted datasets -> one leak-free corpus of face-text pairs.

    from corpus.build import build_corpus
    stats = build_corpus(Path("converted"), Path("corpus"))

Stages: read and check the converted files (`converters.helpers.converted`) -> normalise texts, reject empty
ones, remove exact duplicate pairs (`corpus.hygiene`) -> resolve leak-free splits
(`corpus.leakfree`) -> choose one source per image (`image_table`) -> write the pairs, the image
table, the rejects, the statistics (`corpus.stats`) and the dataset card (`corpus.card`).

The build holds `.OUT.lock` beside OUT for the whole run (`common.locks`, a second build is refused),
writes into a temporary folder beside OUT and publishes it onto OUT at the end (`common.fileio.atomic_folder`),
so a killed build leaves no corpus that looks complete. The same inputs give byte-identical files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import converters
from common.arrays import encode
from common.errors import UserError
from common.fileio import atomic_folder
from common.locks import folder_lock
from common.memory import peak_rss_mb
from common.progress import Progress
from common.records import SPLITS
from converters.helpers.converted import ConvertedSet, read_converted
from converters.helpers.schema import RECORD_SCHEMA

from . import card, layout, stats
from .config import BuildConfig
from .hygiene import DUPLICATE_PAIR, EMPTY_TEXT, clean_texts
from .layout import STORED_IMAGE_SCHEMA
from .leakfree import resolve_splits
from .state import Corpus

log = logging.getLogger(__name__)

WRITER_THREADS = 2

# Which dataset an image is read from when several offer the same image_id: the higher-resolution
# source first (CelebA-Text-HQ uses CelebAMask-HQ's 1024x1024 CelebA-HQ images, MM-CelebA-HQ the
# same faces at 512x512), then registry order (CelebA before CelebA-Dialog: the same aligned files).
# A dataset missing here would come last, in registry order (a test keeps the list complete).
IMAGE_SOURCE_PREFERENCE = (
    "celeba_text_hq",
    "mm_celeba_hq",
    "celeba",
    "fs2k",
    "affectnet",
    "rafdb",
    "expw",
    "cacd",
    "afad",
    "imdb_wiki",
    "fairface",
    "ffhq_text",
    "celeba_dialog",
)

STAGES = ("read", "clean", "splits", "images", "write pairs", "stats", "card")  # as StageClock sees them


def build_corpus(
    converted: Path,
    out: Path,
    config: BuildConfig | None = None,
    *,
    timings: dict | None = None,
    progress: bool = False,
) -> dict:
    """Build the corpus in `out` from the converted files in `converted`; return its statistics.

    timings -- if given, filled with {stage: {"seconds", "peak_rss_mb"}} (never written to the corpus)
    progress -- show a bar of the stages (plain lines when stderr is not a terminal)
    """
    converted, out, config = Path(converted), Path(out), config or BuildConfig()
    out = out if out.name else out.resolve()  # `.` or `..`: the folder is replaced by its name
    _check_out(converted, out)
    with (
        folder_lock(out, "build-corpus", whole=True),
        Progress(len(STAGES), "build-corpus", "stage", enabled=progress) as bar,
    ):
        return _build_locked(converted, out, config, StageClock(timings, bar))


def _build_locked(converted: Path, out: Path, config: BuildConfig, clock: StageClock) -> dict:
    ratios, seed, pairs_per_file = config.split_ratios, config.seed, config.pairs_per_file
    with clock("read"):
        inputs = read_converted(converted)
        table = inputs.concatenated()
        dataset_codes = _dataset_codes(inputs)
        image_codes, _ = encode(table.column("image_id"))
    with clock("clean"):
        hygiene = clean_texts(table, image_codes)
    with clock("splits"):
        splits = resolve_splits(table, dataset_codes, inputs.split_by_person(), ratios, seed)
    with clock("images"):
        images = image_table(table, dataset_codes, image_codes, hygiene.kept, splits.final)
    options = {
        "split_ratios": dict(zip(SPLITS, ratios)),
        "seed": seed,
        "pairs_per_file": pairs_per_file,
        "image_source_preference": list(IMAGE_SOURCE_PREFERENCE),
    }
    corpus = Corpus(inputs, table, dataset_codes, image_codes, hygiene, splits, images, options)
    return _write_atomically(corpus, config, out, clock)


class StageClock:
    """Records each stage's wall seconds and the process's peak RSS so far into `sink`, logs them and
    advances `progress`."""

    def __init__(self, sink: dict | None, progress: Progress | None = None):
        self.times = sink if sink is not None else {}
        self.progress = progress

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        seconds = round(time.perf_counter() - start, 3)
        peak_mb = round(peak_rss_mb())
        self.times[stage] = {"seconds": seconds, "peak_rss_mb": peak_mb}
        log.info("%s: %.2f s, peak RSS %d MB", stage, seconds, peak_mb)
        if self.progress is not None:
            self.progress.update(1, stage)


def _check_out(converted: Path, out: Path) -> None:
    source, target = converted.resolve(), out.resolve()
    if target == source or target in source.parents:
        raise UserError(f"--out {out} would replace the converted folder {converted}; choose another folder")
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not layout.is_complete(target):
        raise UserError(
            f"--out {out} exists and is not a corpus (it lacks {', '.join(layout.missing_files(target))}); "
            "refusing to replace it"
        )


def _dataset_codes(inputs: ConvertedSet) -> np.ndarray:
    codes = [converters.DATASETS.index(s.name) for s in inputs.sources]
    return np.repeat(np.array(codes, dtype=np.int8), [s.table.num_rows for s in inputs.sources])


def image_table(
    table: pa.Table, dataset_codes: np.ndarray, image_codes: np.ndarray, kept: np.ndarray, final_splits: np.ndarray
) -> pa.Table:
    """One row per image_id of the kept pairs, read from the most preferred dataset that offers it."""
    preference = np.array([preference_rank(n) for n in converters.DATASETS])
    rows = np.flatnonzero(kept)
    by_preference = rows[np.argsort(preference[dataset_codes[rows]], kind="stable")]
    _, first = np.unique(image_codes[by_preference], return_index=True)
    chosen = pa.array(by_preference[first])
    codes = pa.array(dataset_codes).take(chosen)
    unsorted = pa.Table.from_arrays(
        [
            table.column("image_id").take(chosen).combine_chunks(),
            pa.array(list(converters.DATASETS), pa.string()).take(codes),
            table.column("image").take(chosen).combine_chunks(),
            table.column("box").take(chosen).combine_chunks(),
            pa.array(SPLITS, pa.string()).take(pa.array(final_splits).take(chosen)),
        ],
        schema=STORED_IMAGE_SCHEMA,
    )
    return unsorted.take(pc.sort_indices(unsorted.column("image_id")))


def preference_rank(name: str) -> int:
    listed = IMAGE_SOURCE_PREFERENCE.index(name) if name in IMAGE_SOURCE_PREFERENCE else len(IMAGE_SOURCE_PREFERENCE)
    return listed * len(converters.DATASETS) + converters.DATASETS.index(name)


def image_roots(corpus: Corpus) -> dict[str, str]:
    """{dataset: root} of the datasets images.parquet reads from, in registry order (from their converted summaries)."""
    used = set(corpus.images.column("dataset").to_pylist())
    return {s.name: s.root for s in corpus.inputs.sources if s.name in used}


def _write_atomically(corpus: Corpus, config: BuildConfig, out: Path, clock: StageClock) -> dict:
    with atomic_folder(out) as staging:
        with clock("write pairs"):
            write_pairs(corpus, staging)
            layout.write_tables(
                staging, corpus.images, image_roots(corpus), reject_records(corpus), dataclasses.asdict(config)
            )
        with clock("stats"):
            corpus_stats = stats.corpus_stats(corpus)
            layout.write_statistics(staging, corpus_stats, stats.markdown(corpus_stats), stats.bar_chart(corpus_stats))
        with clock("card"):
            layout.write_card(staging, card.card_text(corpus_stats, corpus.inputs))
    log.info("corpus written to %s", out)
    return corpus_stats


def write_pairs(corpus: Corpus, folder: Path) -> None:
    """The kept pairs of each split in corpus order, `pairs_per_file` rows per part (at least one part per
    split, so each split's data files exist), every RECORD_SCHEMA column.

    Parts are independent files, so they are written by WRITER_THREADS threads (Parquet encoding
    releases the GIL); each part's content and name depend only on its rows.
    """
    layout.pairs_folder(folder).mkdir(parents=True)
    per_file = corpus.options["pairs_per_file"]
    final = corpus.splits.final_splits()
    parts = []
    for code, split in enumerate(SPLITS):
        selected = corpus.hygiene.kept & (corpus.splits.final == code)
        rows = np.flatnonzero(selected)
        starts = range(0, max(len(rows), 1), per_file)
        parts += [(selected, rows[start : start + per_file], folder, split, part) for part, start in enumerate(starts)]
    with ThreadPoolExecutor(WRITER_THREADS) as pool:
        list(pool.map(lambda part: _write_part(corpus, final, *part), parts))  # re-raises the first failure
    log.info("wrote %d pairs in %d files", int(corpus.hygiene.kept.sum()), len(parts))


def _write_part(
    corpus: Corpus, final: pa.Array, selected: np.ndarray, rows: np.ndarray, folder: Path, split: str, part: int
) -> None:
    low, high = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
    mask = pa.array(selected[low:high])
    columns = []
    for name in RECORD_SCHEMA.names:
        column = corpus.hygiene.text if name == "text" else final if name == "split" else corpus.table.column(name)
        columns.append(column.slice(low, high - low).filter(mask))
    layout.write_pair_part(folder, split, part, pa.Table.from_arrays(columns, schema=RECORD_SCHEMA))


def reject_records(corpus: Corpus) -> list[dict]:
    """The rows dropped by the corpus, in row order: empty texts and duplicate pairs (naming the pair kept)."""
    hygiene = corpus.hygiene
    empty_rows = np.flatnonzero(hygiene.empty)
    rows = np.concatenate([empty_rows, hygiene.duplicate_rows])
    kept_instead = np.concatenate([np.full(len(empty_rows), -1), hygiene.kept_instead])
    order = np.argsort(rows, kind="stable")
    rows, kept_instead = rows[order], kept_instead[order]
    names = list(converters.DATASETS)
    datasets = [names[c] for c in corpus.dataset_codes[rows]]
    sources = corpus.table.column("source").take(pa.array(rows)).to_pylist()
    kept_sources = corpus.table.column("source").take(pa.array(np.maximum(kept_instead, 0))).to_pylist()
    kept_datasets = [names[c] for c in corpus.dataset_codes[np.maximum(kept_instead, 0)]]
    return [
        {"dataset": d, "source": s, "reason": EMPTY_TEXT, "detail": "no text left after normalising whitespace"}
        if k < 0
        else {
            "dataset": d,
            "source": s,
            "reason": DUPLICATE_PAIR,
            "detail": f"same image_id, kind and text as {kd} {ks}",
        }
        for d, s, k, kd, ks in zip(datasets, sources, kept_instead.tolist(), kept_datasets, kept_sources)
    ]
