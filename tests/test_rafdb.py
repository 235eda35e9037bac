import shutil

import pytest

from common.errors import UserError
from converters import convert
from converters.fixtures import rafdb as fixture

BASIC_TEXTS = [
    "rafdb expression: sadness; gender: male; race: asian; age: 40-69",
    "rafdb expression: happiness; gender: female; race: caucasian; age: 20-39",
    "rafdb expression: neutral; race: african american; age: 70+",  # gender 2 (unsure) is left out
    "rafdb expression: surprise",  # no manual file
    "rafdb expression: anger; gender: male; race: caucasian; age: 4-19",
    "rafdb expression: happiness; gender: female; race: asian; age: 0-3",
    "rafdb expression: fear; gender: male; race: african american; age: 20-39",
    "rafdb expression: disgust; gender: female; race: caucasian; age: 40-69",
]
COMPOUND_TEXTS = [
    "rafdb expression: happily surprised; gender: female; race: caucasian; age: 20-39",
    "rafdb expression: disgustedly surprised; gender: male; race: asian; age: 40-69",
    "rafdb expression: fearfully angry; gender: female; race: african american; age: 4-19",
]
BASIC_IDS = ["rafdb/basic/" + name for name, _, _ in fixture.BASIC]
LABELS = "basic/EmoLabel/list_patition_label.txt"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("written") / "rafdb"
    fixture.write_sample(root)
    return root


@pytest.fixture
def sample(written, tmp_path):
    """A fresh copy of the sample for each test (the images are written once per module)."""
    return shutil.copytree(written, tmp_path / "rafdb")


def test_sample_rows_exact(sample, run_convert):
    got = run_convert("rafdb", sample)
    assert not got.rejects
    assert got.rows[1] == {
        "dataset": "rafdb",
        "image": "basic/Image/aligned/train_00002_aligned.jpg",
        "image_id": "rafdb/basic/train_00002",
        "box": None,
        "split": "train",
        "kind": "attributes",
        "text": BASIC_TEXTS[1],
        "attributes": [
            {"key": "expression", "value": "happiness"},
            {"key": "gender", "value": "female"},
            {"key": "race", "value": "caucasian"},
            {"key": "age", "value": "20-39"},
        ],
        "source": f"{LABELS}:2",
        "person": None,
        "origin_id": None,
    }
    assert [r["text"] for r in got.rows] == BASIC_TEXTS + COMPOUND_TEXTS
    assert [r["image_id"] for r in got.rows] == BASIC_IDS + [
        "rafdb/compound/train_0001",
        "rafdb/compound/train_0002",
        "rafdb/compound/test_0001",
    ]
    assert [r["split"] for r in got.rows] == ["train"] * 5 + ["test"] * 3 + ["train", "train", "test"]
    assert got.rows[-1]["image"] == "compound/Image/aligned/test_0001_aligned.jpg"
    assert got.rows[-1]["source"] == "compound/EmoLabel/list_patition_label.txt:3"
    assert got.summary["splits"] == {"train": 7, "val": 0, "test": 4}
    assert got.summary["expected"] == {"official": {"train": 15433, "test": 3860, "total": 19293}, "paper": 29000}
    assert got.summary["notes"] == [
        (
            "basic/Annotation/manual: 1 of 8 faces with gender code 2, left out by the manifest "
            "(e.g. train_00003: gender '2'); the pairs it would give are left out of their texts"
        ),
        (
            "basic/Annotation/manual: 1 of 8 faces with no manual file (e.g. train_00004); "
            "the pairs it would give are left out of their texts"
        ),
    ]


@pytest.mark.parametrize("variant", ["partition_spelling", "extra_level", "nested_aligned"])
def test_layout_variants_give_the_same_texts(tmp_path, run_convert, variant):
    root = tmp_path / variant
    data = root / "RAF-DB" if variant == "extra_level" else root
    fixture.write_sample(
        data,
        label_file="list_partition_label.txt" if variant == "partition_spelling" else fixture.LABEL_FILE,
        aligned_nested=variant == "nested_aligned",
    )
    got = run_convert("rafdb", root)
    assert [r["text"] for r in got.rows] == BASIC_TEXTS + COMPOUND_TEXTS
    assert got.rows[0]["image_id"] == "rafdb/basic/train_00001"
    assert (
        got.rows[0]["image"]
        == {
            "partition_spelling": "basic/Image/aligned/train_00001_aligned.jpg",
            "extra_level": "RAF-DB/basic/Image/aligned/train_00001_aligned.jpg",
            "nested_aligned": "basic/Image/aligned/aligned/train_00001_aligned.jpg",
        }[variant]
    )
    assert got.rows[0]["source"].endswith(
        "list_partition_label.txt:1" if variant == "partition_spelling" else "list_patition_label.txt:1"
    )


def test_basic_only_download_and_option_compound_false(tmp_path, sample, run_convert):
    only_basic = run_convert("rafdb", sample, "compound=false")
    assert [r["text"] for r in only_basic.rows] == BASIC_TEXTS
    assert "compound subset not converted (option compound=false)" in only_basic.summary["notes"]
    shutil.rmtree(sample / "compound")
    no_compound = run_convert("rafdb", sample)
    assert [r["text"] for r in no_compound.rows] == BASIC_TEXTS
    assert "no compound/ folder: only the basic subset was converted" in no_compound.summary["notes"]
    bare = run_convert("rafdb", sample / "basic")  # --root pointing inside basic/
    assert bare.rows[0]["image"] == "Image/aligned/train_00001_aligned.jpg"
    assert [r["image_id"] for r in bare.rows] == BASIC_IDS


def test_without_manual_folder_or_option_texts_carry_the_expression(sample, run_convert):
    no_manual = run_convert("rafdb", sample, "manual=false")
    assert [r["text"] for r in no_manual.rows][:2] == ["rafdb expression: sadness", "rafdb expression: happiness"]
    shutil.rmtree(sample / "compound" / "Annotation")
    got = run_convert("rafdb", sample)
    assert [r["text"] for r in got.rows] == BASIC_TEXTS + [t.split(";")[0] for t in COMPOUND_TEXTS]
    assert "no Annotation/manual folder in compound: texts carry the expression only" in got.summary["notes"]


def test_bad_lines_are_rejected_with_reasons(sample, run_convert):
    labels = sample / LABELS
    lines = labels.read_text().splitlines()
    lines[1] = "train_00002.jpg"  # malformed: one field
    lines[2] = "train_00003.jpg 9"  # unknown label
    lines += ["../../../etc/passwd 4", "train_00099.jpg 4", "train_00001.jpg 5", "val_0001.jpg 3"]
    labels.write_text("\r\n".join(lines) + "\r\n\r\n")  # CRLF endings and a trailing blank line
    (sample / "basic" / "Image" / "aligned" / "test_0001_aligned.jpg").unlink()
    (sample / "basic" / "Image" / "aligned" / "val_0001_aligned.jpg").touch()
    aligned = sample / "basic" / "Image" / "aligned"
    (aligned / "train_00005_aligned.jpg").rename(aligned / "TRAIN_00005_Aligned.JPG")
    got = run_convert("rafdb", sample, "compound=false")
    assert got.reasons() == {
        "malformed line": [f"{LABELS}:2"],
        "unknown label value": [f"{LABELS}:3"],
        "path escapes root": [f"{LABELS}:9"],
        "image missing": [f"{LABELS}:6", f"{LABELS}:10"],
        "duplicate line": [f"{LABELS}:11"],
        "no split": [f"{LABELS}:12"],
    }
    details = {r["reason"]: r["detail"] for r in got.rejects}
    assert details["malformed line"] == "expected 2 fields, found 1"
    assert details["unknown label value"] == "label='9'"
    assert details["path escapes root"] == "basic/Image/aligned/../../../etc/passwd_aligned.jpg"
    assert [r["image_id"] for r in got.rows] == [
        "rafdb/basic/train_00001",
        "rafdb/basic/train_00004",
        "rafdb/basic/train_00005",
        "rafdb/basic/test_0002",
        "rafdb/basic/test_0003",
    ]
    assert got.rows[2]["image"] == "basic/Image/aligned/TRAIN_00005_Aligned.JPG"


def test_unusable_manual_files_leave_their_pairs_out(sample, run_convert):
    manual = sample / "basic" / "Annotation" / "manual"
    text = (manual / "train_00001_manu_attri.txt").read_text().splitlines()
    (manual / "train_00001_manu_attri.txt").write_text("\n".join(text[:7]) + "\n")  # age line lost
    (manual / "train_00002_manu_attri.txt").write_text("\n".join(text[:6] + ["5", "2"]) + "\n")  # race 5
    got = run_convert("rafdb", sample, "compound=false")
    assert [r["text"] for r in got.rows][:2] == [
        "rafdb expression: sadness",
        "rafdb expression: happiness; gender: male; age: 20-39",
    ]
    assert (
        "basic/Annotation/manual: 1 of 8 faces with a malformed manual file (e.g. train_00001); "
        "the pairs it would give are left out of their texts"
    ) in got.summary["notes"]
    assert any("1 of 8 faces with an unknown race code (e.g. train_00002: race '5')" in n for n in got.summary["notes"])


def test_missing_files_are_clear_errors(sample, tmp_path):
    shutil.rmtree(sample / "basic" / "Image" / "aligned")
    with pytest.raises(UserError, match=r"no folder named aligned under .*rafdb/basic"):
        convert("rafdb", sample, tmp_path / "out")
    (sample / LABELS).unlink()
    with pytest.raises(
        UserError, match=r"no file named list_patition_label.txt or list_partition_label.txt under .*bas"
    ):
        convert("rafdb", sample, tmp_path / "out")
    shutil.rmtree(sample / "basic")
    with pytest.raises(UserError, match=r"rafdb: no basic/EmoLabel/list_patition_label.txt .* under .*rafdb"):
        convert("rafdb", sample, tmp_path / "out")
    with pytest.raises(UserError, match=r"option compound='maybe'"):
        convert("rafdb", sample, tmp_path / "out", ["compound=maybe"])
    assert not (tmp_path / "out" / "rafdb.parquet").exists()


def test_root_pointing_at_the_compound_folder_is_not_read_as_basic(sample, tmp_path):
    with pytest.raises(UserError, match=r"rafdb: no basic/EmoLabel/list_patition_label.txt"):
        convert("rafdb", sample / "compound", tmp_path / "out")
