"""build-corpus on converted fixtures that share faces across the CelebA family.

The family fixture (faces by CelebA id; HQ = a CelebA-HQ index and its origin):

    celeba        000001-000006 train, 000007-000008 val, 000009-000010 test (official)
    celeba_dialog 000001-000011 captions (split: none -> follows CelebA; 000011 is hashed)
    mm_celeba_hq  hq0->000002 test, hq1->000009 train, hq2->000005 train, hq3->000007 train, hq4->000100 test
    celeba_text_hq hq0 train, hq2 test, hq3 train with no origin_id (found through mm_celeba_hq)
"""

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

import manifests
from common.errors import UserError
from common.splits import hash_split
from converters import convert
from converters.fixtures import celeba as celeba_fixture
from converters.helpers.rows import make_table
from converters.helpers.schema import RECORD_SCHEMA
from corpus import build, layout
from corpus.build import BuildConfig, build_corpus

ROOTS = {
    name: f"/data/{name}" for name in ("celeba", "celeba_dialog", "mm_celeba_hq", "celeba_text_hq", "afad", "expw")
}


def write_converted(folder: Path, name: str, rows: list[dict], root: str | None = None) -> None:
    """NAME.parquet + NAME.summary.json as `convert` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = {f: [r.get(f) for r in rows] for f in RECORD_SCHEMA.names if f != "dataset"}
    table = make_table(len(rows), dataset=name, **columns)
    pq.write_table(table, folder / f"{name}.parquet")
    counts = manifests.load(name)["counts"]
    summary = {
        "dataset": name,
        "root": root or ROOTS[name],
        "options": {},
        "records_in": len(rows),
        "rows": len(rows),
        "images": len({r["image_id"] for r in rows}),
        "rejects": {"total": 0, "by_reason": {}},
        "splits": {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")},
        "kinds": {},
        "expected": {"official": counts["official"], "paper": counts["paper"]},
        "notes": [],
    }
    (folder / f"{name}.summary.json").write_text(json.dumps(summary))


def row(image_id: str, split: str, text: str, kind: str = "caption", **extra) -> dict:
    image = extra.pop("image", image_id.split("/")[1] + ".jpg")
    return {
        "image": image,
        "image_id": image_id,
        "split": split,
        "kind": kind,
        "text": text,
        "source": f"ann.txt:{image_id}",
        **extra,
    }


def celeba_rows() -> list[dict]:
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    persons = [1, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    return [
        row(
            f"celeba/{i:06d}",
            s,
            f"celeba smiling: {'true' if i % 2 else 'false'}; id: {i}",
            "attributes",
            image=f"img_align_celeba/{i:06d}.jpg",
            person=f"celeba:{p}",
        )
        for i, s, p in zip(range(1, 11), splits, persons)
    ]


def dialog_rows() -> list[dict]:
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 2 + ["train"]
    rows = [
        row(f"celeba/{i:06d}", s, f"The person {i} smiles.", image=f"img_align_celeba/{i:06d}.jpg")
        for i, s in zip(range(1, 12), splits)
    ]
    rows.insert(
        1, row("celeba/000001", "train", "The person 1 smiles.", image="img_align_celeba/000001.jpg")
    )  # duplicate
    rows.insert(2, row("celeba/000001", "train", " \t ", image="img_align_celeba/000001.jpg"))  # empty
    rows.append(
        row("celeba/000003", "train", "  Two\n spaces  here ", image="img_align_celeba/000003.jpg")
    )  # normalised
    return rows


HQ_ORIGINS = {0: "celeba/000002", 1: "celeba/000009", 2: "celeba/000005", 3: "celeba/000007", 4: "celeba/000100"}


def mm_rows() -> list[dict]:
    splits = {0: "test", 1: "train", 2: "train", 3: "train", 4: "test"}
    return [
        row(f"celeba_hq/{k}", splits[k], f"Caption {c} of face {k}.", image=f"image/{k}.jpg", origin_id=HQ_ORIGINS[k])
        for k in range(5)
        for c in range(2)
    ]


def text_hq_rows() -> list[dict]:
    return [
        row(
            "celeba_hq/0", "train", "Caption 0 of face 0.", image="CelebA-HQ-img/0.jpg", origin_id=HQ_ORIGINS[0]
        ),  # = mm's
        row(
            "celeba_hq/0", "train", "A manual caption of face 0.", image="CelebA-HQ-img/0.jpg", origin_id=HQ_ORIGINS[0]
        ),
        row("celeba_hq/2", "test", "A manual caption of face 2.", image="CelebA-HQ-img/2.jpg", origin_id=HQ_ORIGINS[2]),
        row("celeba_hq/3", "train", "A manual caption of face 3.", image="CelebA-HQ-img/3.jpg"),  # no origin_id
    ]


@pytest.fixture
def family(tmp_path) -> Path:
    folder = tmp_path / "converted"
    write_converted(folder, "celeba", celeba_rows())
    write_converted(folder, "celeba_dialog", dialog_rows())
    write_converted(folder, "mm_celeba_hq", mm_rows())
    write_converted(folder, "celeba_text_hq", text_hq_rows())
    return folder


def read_pairs(out: Path) -> list[dict]:
    return ds.dataset(layout.pair_files(out), format="parquet").to_table().to_pylist()


def split_of(pairs, dataset, image_id) -> set:
    return {p["split"] for p in pairs if p["dataset"] == dataset and p["image_id"] == image_id}


def test_held_out_wins_moves_exact_rows(family, tmp_path):
    stats = build_corpus(family, tmp_path / "corpus")
    moves = stats["splits"]["moves"]
    assert moves["held_out_wins"] == {
        "celeba": {"train->test": 2},  # 000002 (test in MM-CelebA-HQ), 000005 (test in CelebA-Text-HQ)
        "mm_celeba_hq": {"train->val": 2, "train->test": 4},  # hq3 -> val (CelebA val); hq1, hq2 -> test
        # hq0 -> test (mm test; its copy of mm's caption is removed, so not counted); hq3 -> val (origin via mm)
        "celeba_text_hq": {"train->test": 1, "train->val": 1},
    }
    assert moves["by_person"] == {"celeba_dialog": {"train->test": 2}}  # 000002, 000005 follow their held-out faces
    assert stats["splits"]["rows_moved_by_held_out_wins"] == 10
    assert stats["splits"]["faces_moved_by_held_out_wins"] == 4
    pairs = read_pairs(tmp_path / "corpus")
    assert split_of(pairs, "celeba", "celeba/000002") == {"test"}
    assert split_of(pairs, "celeba", "celeba/000001") == {"train"}
    assert split_of(pairs, "mm_celeba_hq", "celeba_hq/3") == split_of(pairs, "celeba_text_hq", "celeba_hq/3") == {"val"}
    expected_new = hash_split(pa.array(["celeba/000011"]))[0].as_py()  # a face no official split places
    assert split_of(pairs, "celeba_dialog", "celeba/000011") == {expected_new}


def test_no_face_is_train_where_it_is_held_out_anywhere(family, tmp_path):
    build_corpus(family, tmp_path / "corpus")
    pairs = read_pairs(tmp_path / "corpus")
    by_face = {}
    for p in pairs:
        key = p["origin_id"] or (
            HQ_ORIGINS[int(p["image_id"].split("/")[1])] if p["image_id"].startswith("celeba_hq/") else p["image_id"]
        )
        by_face.setdefault(key, set()).add(p["split"])
    assert all(len(splits) == 1 for splits in by_face.values()), by_face


def test_dedupe_empty_and_whitespace(family, tmp_path):
    out = tmp_path / "corpus"
    stats = build_corpus(family, out)
    assert stats["hygiene"] == {"whitespace_normalised": 2, "empty_texts_rejected": 1, "duplicate_pairs_removed": 2}
    assert stats["datasets"]["celeba_dialog"]["duplicate_pairs_removed"] == 1
    assert stats["datasets"]["celeba_text_hq"]["duplicate_pairs_removed"] == 1  # same caption as mm_celeba_hq
    assert stats["datasets"]["celeba_dialog"]["empty_texts_rejected"] == 1
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert rejects == [  # corpus order: registry order (celeba_text_hq before celeba_dialog), then row order
        {
            "dataset": "celeba_text_hq",
            "source": "ann.txt:celeba_hq/0",
            "reason": "duplicate pair",
            "detail": "same image_id, kind and text as mm_celeba_hq ann.txt:celeba_hq/0",
        },
        {
            "dataset": "celeba_dialog",
            "source": "ann.txt:celeba/000001",
            "reason": "duplicate pair",
            "detail": "same image_id, kind and text as celeba_dialog ann.txt:celeba/000001",
        },
        {
            "dataset": "celeba_dialog",
            "source": "ann.txt:celeba/000001",
            "reason": "empty text",
            "detail": "no text left after normalising whitespace",
        },
    ]
    pairs = read_pairs(out)
    assert "Two spaces here" in [p["text"] for p in pairs]
    assert len(pairs) == 10 + 14 + 10 + 4 - 3
    assert stats["corpus"]["pairs"] == len(pairs)


def test_pairs_order_schema_and_parts(family, tmp_path):
    out = tmp_path / "corpus"
    build_corpus(family, out, BuildConfig(pairs_per_file=7))
    files = [p.name for p in layout.pair_files(out)]
    counts = {s: sum(p["split"] == s for p in read_pairs(out)) for s in ("train", "val", "test")}
    assert counts == {"train": 10, "val": 7, "test": 18}  # one file per 7 pairs of a split, train first
    assert files == [
        "train-00000.parquet",
        "train-00001.parquet",
        "val-00000.parquet",
        "test-00000.parquet",
        "test-00001.parquet",
        "test-00002.parquet",
    ]
    for f in files:
        assert pq.read_schema(out / "pairs" / f).equals(RECORD_SCHEMA)
        assert len(set(pq.read_table(out / "pairs" / f).column("split").to_pylist())) == 1
    pairs = read_pairs(out)
    assert [p["split"] for p in pairs] == sorted((p["split"] for p in pairs), key=["train", "val", "test"].index)
    order = ["celeba", "mm_celeba_hq", "celeba_text_hq", "celeba_dialog"]  # registry order within each split
    for split in ("train", "val", "test"):
        datasets = [p["dataset"] for p in pairs if p["split"] == split]
        assert datasets == sorted(datasets, key=order.index)
    celeba = [p["image_id"] for p in pairs if p["dataset"] == "celeba"]
    assert celeba == [f"celeba/{i:06d}" for i in (1, 3, 4, 6, 7, 8, 2, 5, 9, 10)]  # 2 and 5 held out to test


def test_loads_with_hugging_face_datasets(family, tmp_path):  # `datasets` is a dev dependency
    import datasets

    build_corpus(family, tmp_path / "corpus")
    by_split = datasets.load_dataset(str(tmp_path / "corpus"), cache_dir=str(tmp_path / "cache"))  # the card's configs
    assert {name: part.num_rows for name, part in by_split.items()} == {"train": 10, "validation": 7, "test": 18}
    assert set(by_split["test"]["split"]) == {"test"} and set(by_split["validation"]["split"]) == {"val"}
    images = datasets.load_dataset(str(tmp_path / "corpus"), "images", split="train", cache_dir=str(tmp_path / "cache"))
    assert images.num_rows == 16


def test_image_table_prefers_higher_resolution_source(family, tmp_path):
    out = tmp_path / "corpus"
    stats = build_corpus(family, out)
    images = {r["image_id"]: r for r in layout.read_images(out).to_pylist()}
    assert list(images) == sorted(images)
    assert images["celeba_hq/0"]["dataset"] == "celeba_text_hq"  # 1024 px beats mm_celeba_hq's 512 px
    assert images["celeba_hq/0"]["path"] == "/data/celeba_text_hq/CelebA-HQ-img/0.jpg"
    assert images["celeba_hq/1"]["dataset"] == "mm_celeba_hq"  # only there
    assert images["celeba/000001"]["dataset"] == "celeba"  # celeba before celeba_dialog
    assert images["celeba/000011"]["dataset"] == "celeba_dialog"
    assert images["celeba/000002"]["split"] == "test"
    assert len(images) == 11 + 5 == stats["corpus"]["images"]
    assert stats["corpus"]["images_offered_by_several_datasets"] == 10 + 3
    assert set(images["celeba_hq/0"]) == {"image_id", "dataset", "path", "image", "box", "split"}
    assert pq.read_schema(out / "images.parquet").names == ["image_id", "dataset", "image", "box", "split"]  # no path


def test_person_split_for_datasets_without_one(tmp_path):
    folder = tmp_path / "converted"
    afad = [
        row(f"afad/{p}-{k}", "train", f"afad age: {20 + k}; gender: male", "attributes", person=f"afad:{p}")
        for p in range(40)
        for k in range(3)
    ]
    expw = [row(f"expw/img{i}_0", "train", "expw expression: happy", "attributes") for i in range(30)]
    write_converted(folder, "afad", afad)
    write_converted(folder, "expw", expw)
    stats = build_corpus(folder, tmp_path / "corpus", BuildConfig(split_ratios=(0.5, 0.25, 0.25), seed="test-seed"))
    pairs = read_pairs(tmp_path / "corpus")
    by_person = {}
    for p in pairs:
        if p["dataset"] == "afad":
            by_person.setdefault(p["person"], set()).add(p["split"])
    assert all(len(s) == 1 for s in by_person.values())
    expected = hash_split(pa.array([f"afad:{p}" for p in range(40)]), (0.5, 0.25, 0.25), "test-seed").to_pylist()
    assert [by_person[f"afad:{p}"].pop() for p in range(40)] == expected
    expw_expected = hash_split(pa.array([f"expw/img{i}_0" for i in range(30)]), (0.5, 0.25, 0.25), "test-seed")
    assert [p["split"] for p in pairs if p["dataset"] == "expw"] == expw_expected.to_pylist()
    assert stats["splits"]["person_split_datasets"] == ["expw", "afad"]
    assert stats["datasets"]["afad"]["persons_in_train_and_test"] == 0
    assert {"train", "val", "test"} <= set(expected)


def test_byte_identical_rebuilds(family, tmp_path):
    digests = []
    for name in ("a", "b"):
        build_corpus(family, tmp_path / name)
        files = sorted(p for p in (tmp_path / name).rglob("*") if p.is_file())
        digests.append({str(p.relative_to(tmp_path / name)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    assert digests[0] == digests[1]
    assert {
        "README.md",
        "build-config.json",
        "STATS.md",
        "stats.json",
        "images.parquet",
        "rejects.jsonl",
        "pairs_per_dataset.png",
        "roots.yaml",
        "pairs/train-00000.parquet",
        "pairs/val-00000.parquet",
        "pairs/test-00000.parquet",
    } == set(digests[0])


def test_stats_explain_differences_and_card(family, tmp_path):
    out = tmp_path / "corpus"
    stats = build_corpus(family, out)
    celeba = stats["datasets"]["celeba"]
    assert celeba["paper"] == 203000 and celeba["pairs"] == 10 and celeba["difference_vs_paper"] == 10 - 203000
    assert celeba["persons_in_train_and_test"] == 2  # celeba:1 (000002) and celeba:2 (000005) moved to test
    assert any("held-out wins moved: train->test 2" in line for line in celeba["explanation"])
    assert stats["datasets"]["afad"]["present"] is False
    assert stats["datasets"]["afad"]["explanation"][0].startswith("absent:")
    assert "afad" in stats["absent"]
    assert stats["text_tokens"]["all"]["texts"] == 35
    assert stats["text_tokens"]["attributes"]["p50"] == 8  # "celeba smiling: true; id: 1" -> 8 tokens
    assert json.loads((out / "stats.json").read_text()) == stats
    assert "| celeba | 203,000 |" in (out / "STATS.md").read_text()
    assert (out / "pairs_per_dataset.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "other" and meta["configs"][0]["data_files"] == [
        {"split": "train", "path": "pairs/train-*.parquet"},
        {"split": "validation", "path": "pairs/val-*.parquet"},
        {"split": "test", "path": "pairs/test-*.parquet"},
    ]
    assert "@inproceedings{liu2015faceattributes" in card and "Talk2Face" in card
    assert "Non-commercial research purposes only" in card


def test_real_celeba_conversion_builds(tmp_path):
    celeba_fixture.write_sample(tmp_path / "celeba")
    convert("celeba", tmp_path / "celeba", tmp_path / "converted")
    stats = build_corpus(tmp_path / "converted", tmp_path / "corpus")
    assert stats["corpus"]["splits"] == {"train": 9, "val": 1, "test": 2}
    images = layout.read_images(tmp_path / "corpus").to_pylist()
    assert images[0]["path"] == str((tmp_path / "celeba").resolve() / "img_align_celeba" / "000001.jpg")


# -- bad input: one clear line each -----------------------------------------------------------
def one_line_error(converted: Path, out: Path, **kwargs) -> str:
    with pytest.raises(UserError) as caught:
        build_corpus(converted, out, BuildConfig(**kwargs))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_converted_folder(tmp_path):
    assert "is not a directory" in one_line_error(tmp_path / "nowhere", tmp_path / "out")


def test_empty_converted_folder(tmp_path):
    (tmp_path / "converted").mkdir()
    assert "no converted dataset found" in one_line_error(tmp_path / "converted", tmp_path / "out")


def test_parquet_without_summary_and_summary_without_parquet(family, tmp_path):
    (family / "celeba.summary.json").unlink()
    assert "celeba.parquet: no celeba.summary.json" in one_line_error(family, tmp_path / "out")
    write_converted(family, "celeba", celeba_rows())
    (family / "mm_celeba_hq.parquet").unlink()
    assert "mm_celeba_hq.summary.json: no mm_celeba_hq.parquet" in one_line_error(family, tmp_path / "out")


def test_unreadable_parquet(family, tmp_path):
    (family / "celeba.parquet").write_bytes(b"not parquet at all")
    message = one_line_error(family, tmp_path / "out")
    assert "celeba.parquet: not a readable Parquet file" in message


def test_wrong_schema(family, tmp_path):
    table = pq.read_table(family / "celeba.parquet")
    pq.write_table(table.drop_columns(["person"]), family / "celeba.parquet")
    assert "celeba.parquet: not a converted-records file: missing column(s) person" in one_line_error(
        family, tmp_path / "o"
    )
    boxes = table.set_column(3, "box", pa.nulls(table.num_rows, pa.list_(pa.int64())))
    pq.write_table(boxes, family / "celeba.parquet")
    message = one_line_error(family, tmp_path / "o")
    assert "celeba.parquet: column 'box' is list<" in message and "int64>, expected list<item: int32>" in message


def test_rows_claiming_another_dataset(family, tmp_path):
    table = pq.read_table(family / "celeba.parquet")
    pq.write_table(
        table.set_column(0, "dataset", pa.array(["celeba_dialog"] * table.num_rows)), family / "celeba.parquet"
    )
    assert "celeba.parquet: rows claim dataset 'celeba_dialog'" in one_line_error(family, tmp_path / "out")


def test_two_files_claiming_one_dataset(family, tmp_path):
    (family / "celeba_old.parquet").write_bytes((family / "celeba.parquet").read_bytes())
    message = one_line_error(family, tmp_path / "out")
    assert (
        message
        == f"two files claim dataset 'celeba': celeba.parquet and celeba_old.parquet; keep one of them in {family}"
    )


def test_unknown_file_name(family, tmp_path):
    pq.write_table(
        make_table(
            1, dataset="mystery", image="a", image_id="m/1", split="train", kind="caption", text="t", source="s"
        ),
        family / "mystery.parquet",
    )
    assert "mystery.parquet: 'mystery' is not a dataset name" in one_line_error(family, tmp_path / "out")


def test_bad_summary(family, tmp_path):
    (family / "celeba.summary.json").write_text("{ not json")
    assert "celeba.summary.json: not valid JSON" in one_line_error(family, tmp_path / "out")
    summary = {"dataset": "celeba", "root": "/data/celeba", "rows": 3}
    (family / "celeba.summary.json").write_text(json.dumps(summary))
    assert "says 3 rows but celeba.parquet holds 10" in one_line_error(family, tmp_path / "out")


def test_bad_split_value(family, tmp_path):
    rows = celeba_rows()
    rows[0]["split"] = "dev"
    write_converted(family, "celeba", rows)
    assert "celeba.parquet: split 'dev' is not one of train, val, test" in one_line_error(family, tmp_path / "out")


def test_out_must_not_be_converted_or_foreign(family, tmp_path):
    assert "would replace the converted folder" in one_line_error(family, family)
    assert "would replace the converted folder" in one_line_error(family, family.parent)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    assert "is not a corpus" in one_line_error(family, foreign)
    assert "split ratios" in one_line_error(family, tmp_path / "out", split_ratios=(0.9, 0.2, 0.0))


# -- atomic output -------------------------------------------------------------------------
def test_failed_build_leaves_no_corpus_and_keeps_the_old_one(family, tmp_path, monkeypatch):
    out = tmp_path / "corpus"

    def crash(*args, **kwargs):
        raise RuntimeError("killed while writing the card")

    monkeypatch.setattr(build.layout, "write_card", crash)
    with pytest.raises(RuntimeError):
        build_corpus(family, out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".corpus.lock", "converted"]  # no staging folder left
    monkeypatch.undo()
    build_corpus(family, out)
    before = (out / "stats.json").read_bytes()
    monkeypatch.setattr(build.layout, "write_card", crash)
    write_converted(family, "afad", [row("afad/1-1", "train", "afad age: 30", "attributes", person="afad:1")])
    with pytest.raises(RuntimeError):
        build_corpus(family, out)
    assert (out / "stats.json").read_bytes() == before  # the previous complete corpus is untouched
    monkeypatch.undo()
    build_corpus(family, out)  # replaces the old corpus
    assert json.loads((out / "stats.json").read_text())["datasets"]["afad"]["pairs"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".corpus.lock", "converted", "corpus"]


KILL_DURING_STATS = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from corpus import build, layout
build.layout.write_statistics = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
build.build_corpus({converted!r}, {out!r})
"""


def test_killed_build_leaves_nothing_that_looks_complete(family, tmp_path):
    out = tmp_path / "corpus"
    script = KILL_DURING_STATS.format(
        repo=str(Path(__file__).resolve().parents[1]), converted=str(family), out=str(out)
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert result.returncode == -signal.SIGKILL
    assert not out.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".corpus.tmp-")]
    assert len(leftovers) == 1 and not layout.is_complete(leftovers[0])
    assert layout.missing_files(leftovers[0]) == ["stats.json", "STATS.md", "pairs_per_dataset.png", "README.md"]
    build_corpus(family, out)  # the next build removes the dead build's staging folder
    assert layout.is_complete(out) and layout.missing_files(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".corpus.lock", "converted", "corpus"]


def test_a_second_build_on_the_same_out_is_refused_at_once(family, tmp_path):
    from common.locks import folder_lock

    out = tmp_path / "corpus"
    with folder_lock(out, "build-corpus", whole=True):
        message = one_line_error(family, out)
    assert message.startswith(f"{out}: another build-corpus is writing there (it holds {tmp_path / '.corpus.lock'})")
    assert not out.exists()  # refused before any work
    build_corpus(family, out)  # released with the block


def test_completeness_check_names_each_missing_file(family, tmp_path):
    out = tmp_path / "corpus"
    build_corpus(family, out)
    assert layout.is_complete(out) and layout.missing_files(out) == []
    (out / "README.md").unlink()
    (out / "pairs" / "val-00000.parquet").unlink()
    (out / "roots.yaml").unlink()
    assert not layout.is_complete(out)
    assert layout.missing_files(out) == ["pairs/val-*.parquet", "roots.yaml", "README.md"]
    message = one_line_error(family, out)  # an incomplete folder is not replaced
    assert "is not a corpus (it lacks pairs/val-*.parquet, roots.yaml, README.md)" in message
    assert not layout.is_complete(tmp_path / "nowhere")


def test_chart_has_a_log_axis_so_small_counts_show_beside_the_paper(family, tmp_path):
    stats = build_corpus(family, tmp_path / "corpus")
    axes = build.stats.bar_chart(stats).axes[0]
    assert axes.get_xscale() == "log"
    widths = [bar.get_width() for bar in axes.patches]
    assert min(w for w in widths if w > 0) < 20 and max(widths) >= 200_000  # corpus and paper bars on one axis
    assert axes.get_xlim()[0] < 1


# -- building blocks -----------------------------------------------------------------------
def test_image_source_preference_lists_every_dataset():
    from converters import DATASETS

    assert sorted(build.IMAGE_SOURCE_PREFERENCE) == sorted(DATASETS)


def test_normalising_only_candidates_equals_normalise_text():
    from common.arrays import normalise_text
    from corpus.hygiene import normalised_texts

    rng = np.random.default_rng(7)
    alphabet = list("ab Z9;.é\t\n\r\f\v") + ["\u00a0", "\u3000", "\x85", "\x1c", "\u2028", "\u2009", "\u200b", "\ufeff"]
    texts = ["".join(rng.choice(alphabet, rng.integers(0, 10))) for _ in range(4000)] + [None]
    column = pa.chunked_array([pa.array(texts[:2500]), pa.array(texts[2500:])])
    got, changed = normalised_texts(column)
    expected = normalise_text(pa.array([t or "" for t in texts])).to_pylist()
    assert got.to_pylist() == expected
    assert changed == sum(e != (t or "") for e, t in zip(expected, texts))


def test_token_lengths_count_the_token_pattern():
    import pyarrow.compute as pc

    from corpus.hygiene import TOKEN_PATTERN, token_lengths

    texts = pa.array(["celeba gender: male; bald: true", "", "cacd age: 25", "Ünïcode café — ok", "1990s..."])
    assert token_lengths(texts).tolist() == [8, 0, 5, 8, 8]  # '25' and '1990' count one token per digit
    assert token_lengths(texts.slice(1)).tolist() == pc.count_substring_regex(texts.slice(1), TOKEN_PATTERN).to_pylist()


def test_empty_converted_files_give_an_empty_corpus(tmp_path):
    write_converted(tmp_path / "converted", "celeba", [])
    stats = build_corpus(tmp_path / "converted", tmp_path / "corpus")
    assert (
        stats["corpus"]["pairs"] == 0
        and pq.read_table(tmp_path / "corpus" / "pairs" / "train-00000.parquet").num_rows == 0
    )
