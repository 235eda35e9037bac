"""build-corpus benchmark: a full-size synthetic converted input (2.34M pairs, 13 datasets), then the build.

The input is generated with numpy/pyarrow in seconds: official row counts and splits per dataset,
realistic text lengths (CelebA's 40-attribute texts, 10 captions per CelebA-HQ face), persons where
the dataset has them, boxes where it has them, and the real CelebA-family overlaps: CelebA-Dialog
captions every CelebA image; MM-CelebA-HQ's 30,000 faces are a random sample of CelebA images
(`origin_id`) with their own 24,000/6,000 split; CelebA-Text-HQ captions 15,010 of them with its own
13,710/1,300 split. Some duplicate captions, whitespace runs and empty texts are planted.

The build runs in a fresh process; figures: wall seconds per stage, total, peak RSS.
Goal: under 60 s and 3 GB on a 2-core machine.

    python benchmarks/bench_corpus.py                     # generate (cached in --work) and build
    python benchmarks/bench_corpus.py --work /tmp/bench --regenerate
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import manifests
from common.memory import peak_rss_mb
from common.records import SPLITS
from converters.helpers.converted import write_converted
from converters.helpers.rows import attribute_columns, box_column, make_table, prefixed

GOAL_SECONDS = 60
GOAL_RSS_MB = 3072
CELEBA = 202_599
CELEBA_SPLIT = (162_770, 19_867, 19_962)
HQ_FACES = 30_000
TEXT_HQ_FACES = 15_010
CAPTIONS_PER_FACE = 10
RNG = np.random.default_rng(2022)

SUBJECTS = ["The person", "This woman", "This man", "The celebrity", "She", "He", "The lady", "The young man"]
FEATURES = [
    "has high cheekbones",
    "has wavy hair",
    "wears heavy makeup",
    "has arched eyebrows",
    "is smiling",
    "has a pointy nose",
    "has bags under the eyes",
    "wears lipstick",
    "has big lips",
    "has black hair",
    "has straight hair",
    "wears earrings",
    "has a receding hairline",
    "has bushy eyebrows",
    "is young",
    "has a double chin",
    "has rosy cheeks",
    "has a slightly open mouth",
    "wears eyeglasses",
    "has bangs",
]
ENDINGS = [
    ".",
    " and looks attractive.",
    " and is chubby.",
    " with an oval face.",
    " and has a mustache.",
    " and has blond hair.",
    " and wears a hat.",
]


# -- text and column builders --------------------------------------------------------------
def pick(pool: list[str], n: int) -> pa.Array:
    return pa.array(pool, pa.string()).take(pa.array(RNG.integers(0, len(pool), n)))


def captions(n: int) -> pa.Array:
    """Template captions of ~100-150 characters (like MM-CelebA-HQ's)."""
    first = pc.binary_join_element_wise(pick(SUBJECTS, n), pick(FEATURES, n), " ")
    second = pc.binary_join_element_wise(pick(FEATURES, n), pick(FEATURES, n), ", ")
    return pc.binary_join_element_wise(first, ", ", second, pick(ENDINGS, n), "")


def number_strings(values: np.ndarray, width: int = 0) -> pa.Array:
    text = pa.array(values).cast(pa.string())
    return pc.utf8_lpad(text, width, "0") if width else text


def splits_by_counts(counts) -> pa.Array:
    return pa.array(np.array(SPLITS)[np.repeat(np.arange(len(counts)), counts)].tolist(), pa.string())


def hashed_splits(n: int) -> pa.Array:
    return pa.array(np.array(SPLITS)[RNG.choice(3, n, p=(0.9, 0.05, 0.05))].tolist(), pa.string())


def key_value(name: str, keys: list[str], values: list[pa.Array]):
    return attribute_columns(name, keys, values)


def plant_noise(text: pa.Array, fraction: float) -> pa.Array:
    """Whitespace runs in some texts and a few empty ones (the corpus must normalise and reject them)."""
    n = len(text)
    spaced = RNG.random(n) < fraction
    empty = RNG.random(n) < fraction / 10
    text = pc.if_else(pa.array(spaced), pc.binary_join_element_wise("  ", text, "\n", ""), text)
    return pc.if_else(pa.array(empty), pa.scalar("  "), text)


def repeat_some(text: pa.Array, per_face: int, fraction: float) -> pa.Array:
    """Make some captions exact copies of the previous caption of the same face (duplicate pairs)."""
    n = len(text)
    copy = (RNG.random(n) < fraction) & (np.arange(n) % per_face != 0)
    source = np.where(copy, np.arange(n) - 1, np.arange(n))
    return text.take(pa.array(source))


# -- datasets ------------------------------------------------------------------------------
def celeba() -> pa.Table:
    ids = number_strings(np.arange(1, CELEBA + 1), 6)
    names = manifests.load("celeba")["labels"]["attributes"]
    values = [pick(["true", "false"], CELEBA) for _ in names]
    text, attributes = key_value("celeba", [n.replace("_", " ").lower() for n in names], values)
    identity = np.repeat(np.arange(10_177), CELEBA // 10_177 + 1)[:CELEBA]  # blocks: identity-disjoint splits
    return make_table(
        CELEBA,
        dataset="celeba",
        image=prefixed("img_align_celeba/", pc.binary_join_element_wise(ids, ".jpg", "")),
        image_id=prefixed("celeba/", ids),
        split=splits_by_counts(CELEBA_SPLIT),
        kind="attributes",
        text=text,
        attributes=attributes,
        source=prefixed("Anno/list_attr_celeba.txt:", number_strings(np.arange(3, CELEBA + 3))),
        person=prefixed("celeba:", number_strings(identity)),
    )


def celeba_dialog() -> pa.Table:
    ids = number_strings(np.arange(1, CELEBA + 1), 6)
    return make_table(
        CELEBA,
        dataset="celeba_dialog",
        image=prefixed("img_align_celeba/", pc.binary_join_element_wise(ids, ".jpg", "")),
        image_id=prefixed("celeba/", ids),
        split=splits_by_counts(CELEBA_SPLIT),
        kind="caption",
        text=plant_noise(captions(CELEBA), 0.01),
        source=prefixed("captions.json:", ids),
    )


def hq_origins() -> np.ndarray:
    return RNG.choice(np.arange(1, CELEBA + 1), HQ_FACES, replace=False)


def caption_table(name: str, faces: np.ndarray, origins: np.ndarray, splits: np.ndarray, image_dir: str) -> pa.Table:
    n = len(faces) * CAPTIONS_PER_FACE
    face = np.repeat(faces, CAPTIONS_PER_FACE)
    ids = number_strings(face)
    text = plant_noise(repeat_some(captions(n), CAPTIONS_PER_FACE, 0.03), 0.002)
    return make_table(
        n,
        dataset=name,
        image=prefixed(image_dir, pc.binary_join_element_wise(ids, ".jpg", "")),
        image_id=prefixed("celeba_hq/", ids),
        split=pa.array(np.repeat(splits, CAPTIONS_PER_FACE).tolist()),
        kind="caption",
        text=text,
        source=prefixed(
            "text/", pc.binary_join_element_wise(ids, number_strings(np.tile(np.arange(1, 11), len(faces))), ".txt:")
        ),
        origin_id=prefixed("celeba/", number_strings(np.repeat(origins, CAPTIONS_PER_FACE), 6)),
    )


def celeba_hq_family(origins: np.ndarray) -> tuple[pa.Table, pa.Table]:
    faces = np.arange(HQ_FACES)
    mm = caption_table("mm_celeba_hq", faces, origins, np.where(faces < 24_000, "train", "test"), "image/")
    chosen = np.sort(RNG.choice(faces, TEXT_HQ_FACES, replace=False))
    text_splits = np.array(["train"] * 13_710 + ["test"] * 1_300)[RNG.permutation(TEXT_HQ_FACES)]
    text_hq = caption_table("celeba_text_hq", chosen, origins[chosen], text_splits, "CelebA-HQ-img/")
    return mm, text_hq


def labelled(
    name: str,
    n: int,
    keys: list[str],
    vocab: list[list[str]],
    splits: pa.Array,
    *,
    persons: np.ndarray | None = None,
    boxes: bool = False,
    caption: bool = False,
) -> pa.Table:
    """A dataset of key-value texts (or captions) with optional persons and boxes."""
    stems = number_strings(np.arange(n), 7)
    if caption:
        text, attributes, kind = captions(n), None, "caption"
    else:
        text, attributes = key_value(name, keys, [pick(v, n) for v in vocab])
        kind = "attributes"
    box = box_column(RNG.integers(0, 400, (n, 4)), n) if boxes else None
    return make_table(
        n,
        dataset=name,
        image=prefixed("images/", pc.binary_join_element_wise(stems, ".jpg", "")),
        image_id=prefixed(f"{name}/", stems),
        box=box,
        split=splits,
        kind=kind,
        text=text,
        attributes=attributes,
        source=prefixed("labels.txt:", number_strings(np.arange(1, n + 1))),
        person=prefixed(f"{name}:", number_strings(persons)) if persons is not None else None,
    )


AGES = [str(a) for a in range(1, 100)]
EXPRESSIONS = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]
FLOATS = [f"{v:.6f}" for v in np.linspace(-1, 1, 401)]


def others() -> list[pa.Table]:
    imdb_persons = np.concatenate([RNG.integers(0, 20_284, 460_723), np.full(62_328, -1)])
    imdb = labelled(
        "imdb_wiki",
        523_051,
        ["age", "gender"],
        [AGES, ["male", "female"]],
        hashed_splits(523_051),
        persons=imdb_persons,
    )
    imdb = imdb.set_column(
        imdb.schema.get_field_index("person"),
        "person",
        pc.if_else(pa.array(imdb_persons >= 0), imdb.column("person"), pa.scalar(None, pa.string())),
    )
    return [
        labelled(
            "fs2k",
            2_104,
            ["hair", "gender", "smile", "skin color"],
            [["with hair", "no hair"], ["male", "female"], ["true", "false"], ["rosy brown", "peach puff", "tan"]],
            splits_by_counts((1_058, 0, 1_046)),
        ),
        labelled(
            "affectnet",
            420_299,
            ["expression", "valence", "arousal"],
            [EXPRESSIONS, FLOATS, FLOATS],
            splits_by_counts((414_799, 5_500, 0)),
            boxes=True,
        ),
        labelled(
            "rafdb",
            19_293,
            ["emotion", "gender", "race", "age"],
            [
                EXPRESSIONS,
                ["male", "female", "unsure"],
                ["caucasian", "african-american", "asian"],
                ["0-3", "4-19", "20-39", "40-69", "70+"],
            ],
            splits_by_counts((15_433, 0, 3_860)),
        ),
        labelled("expw", 91_793, ["expression"], [EXPRESSIONS], hashed_splits(91_793), boxes=True),
        labelled(
            "cacd",
            163_446,
            ["age"],
            [AGES],
            splits_by_counts((155_000, 3_200, 5_246)),
            persons=np.sort(RNG.integers(0, 2_000, 163_446)),
        ),
        labelled(
            "afad",
            164_432,
            ["age", "gender"],
            [AGES, ["male", "female"]],
            hashed_splits(164_432),
            persons=RNG.integers(0, 60_000, 164_432),
        ),
        imdb,
        labelled(
            "fairface",
            97_698,
            ["age", "gender", "race"],
            [
                ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49"],
                ["male", "female"],
                ["east asian", "indian", "black", "white", "latino hispanic"],
            ],
            splits_by_counts((86_744, 10_954, 0)),
        ),
        labelled("ffhq_text", 6_840, [], [], splits_by_counts((4_500, 0, 2_340)), caption=True),
    ]


def write_dataset(folder: Path, table: pa.Table) -> None:
    name = table.column("dataset")[0].as_py()
    counts = manifests.load(name)["counts"] if (REPO / "manifests" / f"{name}.yaml").exists() else None
    write_converted(
        folder,
        name,
        table,
        [],
        {
            "dataset": name,
            "root": f"/data/{name}",
            "options": {},
            "records_in": table.num_rows,
            "rows": table.num_rows,
            "images": len(pc.unique(table.column("image_id"))),
            "rejects": {"total": 0, "by_reason": {}},
            "splits": {s: int(pc.sum(pc.equal(table.column("split"), s)).as_py() or 0) for s in SPLITS},
            "kinds": {},
            "expected": {"official": counts["official"], "paper": counts["paper"]} if counts else {},
            "notes": ["synthetic benchmark input"],
        },
    )


def generate(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    origins = hq_origins()
    mm, text_hq = celeba_hq_family(origins)
    rows = 0
    for table in [celeba(), *others(), mm, text_hq, celeba_dialog()]:
        write_dataset(folder, table)
        rows += table.num_rows
    (folder / "COMPLETE").write_text(str(rows))
    return rows


# -- running -------------------------------------------------------------------------------
def build_in_this_process(converted: Path, out: Path) -> None:
    """The child: build, then print the figures as JSON."""
    import logging

    from corpus.build import build_corpus

    logging.basicConfig(level=logging.WARNING)
    timings: dict = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    stats = build_corpus(converted, out, timings=timings)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                "timings": timings,
                "total_s": round(total, 2),
                "cpu_s": round(cpu, 2),
                "load": os.getloadavg()[0],
                "peak_rss_mb": round(peak_mb),
                "pairs": stats["corpus"]["pairs"],
                "images": stats["corpus"]["images"],
                "faces": stats["corpus"]["faces"],
                "hygiene": stats["hygiene"],
                "moved": stats["splits"]["rows_moved_by_held_out_wins"],
                "faces_moved": stats["splits"]["faces_moved_by_held_out_wins"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/talk2face-bench-corpus"))
    parser.add_argument("--regenerate", action="store_true", help="write the synthetic input again")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    converted, out = args.work / "converted", args.work / "corpus"
    if args.child:
        return build_in_this_process(converted, out)
    if args.regenerate or not (converted / "COMPLETE").exists():
        shutil.rmtree(converted, ignore_errors=True)
        start = time.perf_counter()
        rows = generate(converted)
        print(f"generated {rows:,} converted rows in {time.perf_counter() - start:.1f} s -> {converted}")
    child = subprocess.run(
        [sys.executable, __file__, "--work", str(args.work), "--child"], capture_output=True, text=True, check=False
    )
    if child.returncode:
        sys.exit(f"build failed:\n{child.stderr}")
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    report(figures)


def report(f: dict) -> None:
    print(
        f"pairs {f['pairs']:,}  images {f['images']:,}  faces {f['faces']:,}  "
        f"moved by held-out wins {f['moved']:,} pairs / {f['faces_moved']:,} faces  hygiene {f['hygiene']}"
    )
    for stage, figures in f["timings"].items():
        print(f"  {stage:<12} {figures['seconds']:7.2f} s   peak RSS so far {figures['peak_rss_mb']:6,} MB")
    ok_time, ok_rss = f["total_s"] < GOAL_SECONDS, f["peak_rss_mb"] < GOAL_RSS_MB
    print(
        f"  {'total':<12} {f['total_s']:7.2f} s   (goal < {GOAL_SECONDS} s: {'ok' if ok_time else 'MISSED'}); "
        f"CPU time {f['cpu_s']:.1f} s; machine load average {f['load']:.1f} (2 cores, shared)"
    )
    print(f"  peak RSS     {f['peak_rss_mb']:7,} MB  (goal < {GOAL_RSS_MB} MB: {'ok' if ok_rss else 'MISSED'})")


if __name__ == "__main__":
    main()
