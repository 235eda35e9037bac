"""export: each format read back by its consumer's own library, counts that reconcile, resume, determinism."""

import glob
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from corpus_fixture import REJECT_REASONS, write_corpus
from PIL import Image

import cli
from common.errors import UserError
from converters import convert
from converters.fixtures import celeba as celeba_fixture
from corpus import layout
from corpus.build import build_corpus
from export.config import ExportConfig
from export.core import REJECTS_FILE, SUMMARY_FILE, export_corpus, safe_name
from export.feedface import FIELDS
from export.text import attribute_sentence, pair_text
from facetokens.images import prepare_face

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def celeba_corpus(tmp_path_factory) -> Path:
    """A corpus built by build-corpus from the CelebA sample (real files): 12 pairs, train 9, val 1, test 2."""
    folder = tmp_path_factory.mktemp("celeba")
    celeba_fixture.write_sample(folder / "celeba")
    convert("celeba", folder / "celeba", folder / "converted")
    build_corpus(folder / "converted", folder / "corpus")
    return folder / "corpus"


@pytest.fixture(scope="module")
def broken_corpus(tmp_path_factory) -> Path:
    """tests/corpus_fixture: faces in every mode and size, 4 of 13 unreadable, two pairs each (stats.json: built)."""
    corpus = write_corpus(tmp_path_factory.mktemp("broken"))
    (corpus / "stats.json").write_text("{}")
    return corpus


def corpus_pairs(corpus: Path) -> list[dict]:
    return [row for f in layout.pair_files(corpus) for row in pq.read_table(f).to_pylist()]


def run(corpus: Path, out: Path, fmt: str, **settings) -> dict:
    return export_corpus(corpus, out, ExportConfig(format=fmt, workers=settings.pop("workers", 1), **settings))


def reconciles(summary: dict) -> bool:
    return summary["pairs_in"] == summary["written"] + sum(summary["skipped"].values())


def tree_digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# ----------------------------------------------------------------------------- each format, read by its consumer
def test_imagefolder_loads_with_datasets_as_three_splits(celeba_corpus, tmp_path):
    import datasets

    out = tmp_path / "hf"
    summary = run(celeba_corpus, out, "imagefolder")
    assert summary["written"] == summary["pairs_in"] == 12 and reconciles(summary)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "cache"))
    assert {name: part.num_rows for name, part in loaded.items()} == {"train": 9, "validation": 1, "test": 2}
    row = loaded["train"][0]
    assert {"image", "text", "dataset", "attribute_text", "caption", "image_id", "kind"} <= set(row)
    assert row["image"].size == (256, 256) and row["dataset"] == "celeba" and row["text"] == row["attribute_text"]
    source = layout.read_images(celeba_corpus).to_pylist()
    first = next(r for r in source if r["image_id"] == row["image_id"])
    expected = prepare_face(first["path"], first["box"], 256).astype(int)  # cropped as tokenize-images crops
    assert np.abs(np.asarray(row["image"].convert("RGB"), dtype=int) - expected).mean() < 4  # JPEG quality 95
    # diffusers' train_text_to_image: data_files={"train": TRAIN_DIR/**}, --image_column image --caption_column text
    diffusers_view = datasets.load_dataset(
        "imagefolder", data_files={"train": str(out / "train" / "**")}, cache_dir=str(tmp_path / "cache2")
    )
    assert diffusers_view["train"].num_rows == 9 and {"image", "text"} <= set(diffusers_view["train"].column_names)


def test_webdataset_decodes_jpg_txt_json(celeba_corpus, tmp_path):
    import webdataset as wds

    out = tmp_path / "wds"
    summary = run(celeba_corpus, out, "webdataset", pairs_per_unit=4)
    shards = sorted(glob.glob(str(out / "*" / "*.tar")))
    assert [Path(s).relative_to(out).as_posix() for s in shards] == [
        "test/00000.tar",
        "train/00000.tar",
        "train/00001.tar",
        "train/00002.tar",
        "validation/00000.tar",
    ]
    samples = list(wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode("pil"))
    assert len(samples) == summary["written"] == 12
    texts = {(p["image_id"], p["text"]) for p in corpus_pairs(celeba_corpus)}
    for sample in samples:
        assert sample["jpg"].size == (256, 256)
        meta = sample["json"]
        assert meta["key"] == sample["__key__"] and len(meta["key"]) == 9  # 5 digits of shard, 4 of sample
        assert meta["caption"] == sample["txt"] and (meta["image_id"], sample["txt"]) in texts
        assert (meta["width"], meta["height"], meta["status"]) == (256, 256, "success")


def test_feedface_fields_line_by_line(celeba_corpus, tmp_path):
    out = tmp_path / "ff"
    run(celeba_corpus, out, "feedface", attribute_text="sentence")
    expected = {p["image_id"]: p for p in corpus_pairs(celeba_corpus)}
    lines = 0
    for split, count in (("train", 9), ("validation", 1), ("test", 2)):
        rows = [json.loads(line) for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(rows) == count
        for row in rows:
            assert list(row)[:4] == list(FIELDS) == ["path", "caption", "width", "height"]
            assert Path(row["path"]).is_absolute() and isinstance(row["caption"], str) and row["caption"]
            with Image.open(row["path"]) as image:  # as PeopleDataset opens it
                assert image.size == (row["width"], row["height"]) == (256, 256)
            pair = expected[row["image_id"]]
            assert row["caption"] == attribute_sentence(pair["attributes"]) and row["attribute_text"] == pair["text"]
            lines += 1
    assert lines == 12


# ----------------------------------------------------------------------------- counts
def test_unreadable_faces_are_counted_by_reason_and_listed(broken_corpus, tmp_path):
    summary = run(broken_corpus, tmp_path / "out", "imagefolder", workers=2, pairs_per_unit=3)
    expected = {f"image {reason}": 0 for reason in REJECT_REASONS.values()}
    for reason in REJECT_REASONS.values():
        expected[f"image {reason}"] += 2  # two pairs per face
    assert summary["skipped"] == expected and summary["written"] == 18 and reconciles(summary)
    rejects = [json.loads(line) for line in (tmp_path / "out" / REJECTS_FILE).read_text().splitlines()]
    assert {r["image_id"]: r["reason"] for r in rejects} == REJECT_REASONS
    assert json.loads((tmp_path / "out" / SUMMARY_FILE).read_text()) == summary


def test_filters_and_empty_texts_are_skipped_with_reasons(celeba_corpus, tmp_path):
    summary = run(celeba_corpus, tmp_path / "a", "feedface", splits=("train", "test"))
    assert summary["skipped"] == {"split not selected": 1} and summary["written"] == 11
    summary = run(celeba_corpus, tmp_path / "b", "feedface", datasets=("fairface",))
    assert summary["skipped"] == {"dataset not selected": 12} and summary["written"] == 0
    assert (tmp_path / "b" / "train.jsonl").read_text() == ""
    assert pair_text("attributes", "celeba bald: false", [], "sentence") == ""  # nothing to say: skipped as empty text
    with pytest.raises(UserError, match="unknown split or dataset"):
        ExportConfig(format="feedface", datasets=("celebA",))


def test_attribute_sentence_rule():
    attributes = [
        {"key": "gender", "value": "male"},
        {"key": "5_o_clock_shadow", "value": "true"},
        {"key": "bald", "value": "False"},
        {"key": "age", "value": "35"},
        {"key": "hair", "value": " "},
    ]
    assert attribute_sentence(attributes) == "A face: gender male, 5 o clock shadow, not bald, age 35."
    assert pair_text("caption", "  A smiling man. ", None, "sentence") == "A smiling man."
    assert pair_text("attributes", "fs2k hair: black", None, "sentence") == "fs2k hair: black"  # no list: as is


def test_synthetic_corpus_of_100k_pairs_reconciles(tmp_path):
    """100,000 pairs (5,000 linked faces, one missing file, one empty sentence) written and counted."""
    corpus = synthetic_corpus(tmp_path, faces=5_000, pairs_per_face=20)
    summary = run(
        corpus, tmp_path / "out", "feedface", link=True, attribute_text="sentence", workers=2, pairs_per_unit=5000
    )
    assert summary["pairs_in"] == 100_000 and reconciles(summary)
    assert summary["skipped"] == {"empty text": 1, "image missing": 20}
    lines = sum(
        len((tmp_path / "out" / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "validation", "test")
    )
    assert lines == summary["written"] == 100_000 - 21


def synthetic_corpus(folder: Path, faces: int, pairs_per_face: int) -> Path:
    import pyarrow as pa

    from common.fileio import write_parquet
    from converters.helpers.rows import make_table
    from converters.helpers.schema import ATTRIBUTE_TYPE

    raw = folder / "raw"
    raw.mkdir()
    Image.new("RGB", (8, 8), (200, 150, 120)).save(raw / "face.png")
    ids = [f"celeba/{k:06d}" for k in range(faces)]
    splits = ["val" if k % 20 == 1 else "test" if k % 20 == 2 else "train" for k in range(faces)]
    images = ["missing.png" if k == 7 else "face.png" for k in range(faces)]
    corpus = folder / "corpus"
    write_parquet(
        pa.table(
            {
                "image_id": ids,
                "dataset": ["celeba"] * faces,
                "image": images,
                "box": pa.nulls(faces, layout.STORED_IMAGE_SCHEMA.field("box").type),
                "split": splits,
            }
        ),
        corpus / "images.parquet",
    )
    layout.write_roots({"celeba": "../raw"}, corpus)  # relative: taken from the corpus folder
    n = faces * pairs_per_face
    rows = np.repeat(np.arange(faces), pairs_per_face)
    attributes = [[{"key": "smiling", "value": "true"}] if r % 2 == 0 else None for r in range(n)]
    attributes[1 * pairs_per_face] = []  # an attribute pair with nothing to say
    pairs = make_table(
        n,
        dataset="celeba",
        image=[images[r] for r in rows],
        image_id=[ids[r] for r in rows],
        split=[splits[r] for r in rows],
        kind=["attributes" if a is not None else "caption" for a in attributes],
        text=["celeba smiling: true" if a is not None else f"a face {r}" for r, a in zip(rows, attributes)],
        attributes=pa.array(attributes, ATTRIBUTE_TYPE),
        source="synthetic",
    )
    write_parquet(pairs, corpus / "pairs" / "part-00000.parquet")
    (corpus / "stats.json").write_text("{}")
    return corpus


# ----------------------------------------------------------------------------- resume, determinism, links, errors
def test_resume_redoes_only_unfinished_units_and_gives_the_same_bytes(celeba_corpus, tmp_path):
    whole = tmp_path / "whole"
    run(celeba_corpus, whole, "webdataset", pairs_per_unit=4)
    resumed = tmp_path / "resumed"
    run(celeba_corpus, resumed, "webdataset", pairs_per_unit=4, workers=2)
    (resumed / ".export" / "done" / "train-00001.json").unlink()  # as if killed while writing train unit 1
    (resumed / "train" / "00001.tar").unlink()
    kept = (resumed / "train" / "00000.tar").stat().st_mtime_ns
    run(celeba_corpus, resumed, "webdataset", pairs_per_unit=4)
    assert (resumed / "train" / "00000.tar").stat().st_mtime_ns == kept  # a finished unit is not rewritten
    assert tree_digest(resumed) == tree_digest(whole)
    with pytest.raises(UserError, match="other settings"):
        run(celeba_corpus, resumed, "webdataset", pairs_per_unit=4, size=512)


def test_link_points_at_the_source_files(celeba_corpus, tmp_path):
    out = tmp_path / "links"
    run(celeba_corpus, out, "imagefolder", link=True)
    rows = [json.loads(line) for line in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    sources = {r["image_id"]: r["path"] for r in layout.read_images(celeba_corpus).to_pylist()}
    for row in rows:
        face = out / "train" / row["file_name"]
        assert face.is_symlink() and os.readlink(face) == sources[row["image_id"]]
        assert (row["width"], row["height"]) == Image.open(face).size == (178, 218)
    with pytest.raises(UserError, match="--link"):
        run(celeba_corpus, tmp_path / "w", "webdataset", link=True)


def test_moved_images_are_found_through_roots_yaml(broken_corpus, tmp_path):
    before = run(broken_corpus, tmp_path / "before", "feedface")
    moved = tmp_path / "elsewhere"
    corpus = tmp_path / "corpus"
    shutil.copytree(broken_corpus.parent / "raw", moved / "raw")
    shutil.copytree(broken_corpus, corpus)
    roots = yaml.safe_load((corpus / "roots.yaml").read_text())
    (corpus / "roots.yaml").write_text(yaml.safe_dump({name: "../elsewhere/raw" for name in roots}))
    assert all(p.startswith(str(moved.resolve())) for p in layout.read_images(corpus).column("path").to_pylist())
    after = run(corpus, tmp_path / "after", "feedface")
    assert after == before
    (corpus / "roots.yaml").write_text("celeba: /x\n")
    with pytest.raises(UserError, match="roots.yaml: no root for cmyk"):
        layout.read_images(corpus)


def test_out_folder_must_be_new_or_an_export(celeba_corpus, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        run(celeba_corpus, tmp_path / "busy", "feedface")
    with pytest.raises(UserError, match="not a corpus"):
        run(tmp_path / "busy", tmp_path / "x", "feedface")


def test_safe_names_stay_inside_and_unique():
    assert safe_name("celeba/000001") == "celeba/000001" and safe_name("expw/photo.1_0") == "expw/photo.1_0"
    odd = [safe_name(i) for i in ("x/../etc", "x/a b", "x/a_b", "x/.hidden")]
    assert len(set(odd)) == 4 and not any(".." in part.split("/") for part in odd)
    assert all(not segment.startswith(".") for name in odd for segment in name.split("/"))


def test_cli_export_prints_the_reconciled_counts(celeba_corpus, tmp_path):
    result = CliRunner().invoke(
        cli.main,
        [
            "export",
            "--corpus",
            str(celeba_corpus),
            "--format",
            "imagefolder",
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "1",
            "--split",
            "train",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "12 pairs in: 9 written (9 faces), 3 skipped (split not selected 3)" in result.output
    result = CliRunner().invoke(
        cli.main, ["export", "--corpus", str(celeba_corpus), "--format", "coco", "--out", str(tmp_path / "p")]
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "--format 'coco'" in result.output


# ----------------------------------------------------------------------------- export-model
def test_export_model_writes_the_folder_load_model_reads(tmp_path):
    import torch

    from trainer.config import load_config
    from trainer.model import Talk2Face
    from trainer.weights import load_model

    torch.manual_seed(0)
    model = Talk2Face(load_config("tiny"))
    torch.save(model.state_dict(), tmp_path / "talk2face.bin")
    result = CliRunner().invoke(
        cli.main,
        [
            "export-model",
            "--checkpoint",
            str(tmp_path / "talk2face.bin"),
            "--config",
            "tiny",
            "--out",
            str(tmp_path / "export"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "export").iterdir()} == {"model.safetensors", "config.json"}
    loaded = load_model(tmp_path / "export")
    assert loaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
