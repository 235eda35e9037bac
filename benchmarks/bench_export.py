"""export benchmark: `export --format imagefolder --size 256` faces/s against tokenize-images' image path.

Generates photo-like JPEGs (half 1024x1024, half CelebA's 178x218, as bench_tokenize does) in a corpus of two
pairs per face, then, on the same cores, alternately:
  * the decode + crop + resize rate of tokenize-images' image path: its DataLoader (`FaceImages`, `collate`,
    `--loader-workers` processes) over the same faces, nothing encoded;
  * `export_corpus` to imagefolder at 256x256 with as many worker processes: plan, read, crop, resize, JPEG
    encode, write the faces and metadata.jsonl, the summary.
Goal: export >= 80% of the tokenize-images image rate. Best round of each (least disturbed by other load).

    python benchmarks/bench_export.py                      # ~1 minute on 2 busy cores
    python benchmarks/bench_export.py --faces 400 --workers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

GOAL = 0.8


def write_corpus(folder: Path, faces: int) -> Path:
    """CORPUS/ in the build-corpus layout: images.parquet relative to roots.yaml, pairs per split, stats.json."""
    import pyarrow as pa
    from bench_tokenize import write_photos

    from common.fileio import write_parquet
    from converters.helpers.rows import make_table
    from corpus import layout

    raw = folder / "raw"
    paths = write_photos(raw, (1024, 1024), faces // 2, "ffhq") + write_photos(
        raw, (178, 218), faces - faces // 2, "celeba"
    )
    ids = sorted(f"bench/{p.stem}" for p in paths)
    names = [f"{i.split('/')[1]}.jpg" for i in ids]
    corpus = folder / "corpus"
    write_parquet(
        pa.table(
            {
                "image_id": ids,
                "dataset": ["celeba"] * len(ids),
                "image": names,
                "box": pa.nulls(len(ids), layout.STORED_IMAGE_SCHEMA.field("box").type),
                "split": ["train"] * len(ids),
            }
        ),
        corpus / layout.IMAGES_FILE,
    )
    layout.write_roots({"celeba": str(raw)}, corpus)
    n = 2 * len(ids)
    pairs = make_table(
        n,
        dataset="celeba",
        image=[x for x in names for _ in (0, 1)],
        image_id=[i for i in ids for _ in (0, 1)],
        split="train",
        kind=["attributes", "caption"] * len(ids),
        text=[t for k in range(len(ids)) for t in ("celeba smiling: true", f"a face, number {k}")],
        source="bench",
    )
    write_parquet(pairs, corpus / layout.PAIRS_FOLDER / layout.pair_part_name("train", 0))
    (corpus / layout.STATS_JSON).write_text("{}")
    return corpus


def tokenize_image_rate(corpus: Path, workers: int, batch_size: int = 64) -> float:
    """faces/s of tokenize-images' DataLoader (decode, crop, square, resize to 256) over the corpus faces."""
    from facetokens.tokenize_images import ShardTask, WorkerOptions, make_loader, read_faces

    faces = read_faces(corpus)
    tasks = [
        ShardTask(k, "train", k, start, faces[start : start + 200]) for k, start in enumerate(range(0, len(faces), 200))
    ]
    options = WorkerOptions(
        config=None,
        ckpt=None,
        batch_size=batch_size,
        loader_workers=workers,
        precision="fp32",
        threads=1,
        check_agreement=False,
    )
    start = time.perf_counter()
    done = sum(batch["size"] for batch in make_loader(tasks, options, pin=False))
    return done / (time.perf_counter() - start)


def export_rate(corpus: Path, out: Path, workers: int) -> tuple[float, dict]:
    from export.config import ExportConfig
    from export.core import export_corpus

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = export_corpus(
        corpus, out, ExportConfig(format="imagefolder", size=256, workers=workers, pairs_per_unit=64)
    )
    return summary["faces_written"] / (time.perf_counter() - start), summary


def main() -> None:
    from facetokens.config import cpu_cores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=240, help="faces (half 1024x1024, half 178x218)")
    parser.add_argument("--workers", type=int, default=cpu_cores(), help="export workers = tokenize loader workers")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = write_corpus(folder, args.faces)
        print(
            f"{platform.processor() or platform.machine()}, {cpu_cores()} cores visible; {args.faces} faces "
            f"(half 1024x1024, half 178x218), {args.workers} worker process(es), best of {args.rounds} rounds"
        )
        baseline, ours = [], []
        for r in range(args.rounds):
            baseline.append(tokenize_image_rate(corpus, args.workers))
            rate, summary = export_rate(corpus, folder / "out", args.workers)
            ours.append(rate)
            assert summary["pairs_in"] == summary["written"] == 2 * args.faces, summary
        b, e = max(baseline), max(ours)
        print(
            f"  tokenize-images image path (decode+crop+resize)  {b:8.1f} faces/s   rounds: "
            f"{', '.join(f'{v:.1f}' for v in baseline)}"
        )
        print(
            f"  export imagefolder 256x256 (whole command)       {e:8.1f} faces/s   rounds: "
            f"{', '.join(f'{v:.1f}' for v in ours)}"
        )
        print(f"  export / image path: {e / b:.1%} (goal >= {GOAL:.0%}: {'met' if e / b >= GOAL else 'NOT met'})")


if __name__ == "__main__":
    main()
