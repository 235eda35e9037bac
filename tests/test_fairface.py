import shutil

import pytest

from common.errors import UserError
from converters import convert
from converters.datasets.fairface import bin_from_date
from converters.fixtures import fairface as fixture

TEXTS = [
    "fairface age: 50-59; gender: male; race: east asian",
    "fairface age: 30-39; gender: female; race: indian",
    "fairface age: 3-9; gender: female; race: black",
    "fairface age: 20-29; gender: female; race: indian",
    "fairface age: 20-29; gender: male; race: white",
    "fairface age: 40-49; gender: male; race: middle eastern",
    "fairface age: 10-19; gender: male; race: white",
    "fairface age: 30-39; gender: male; race: latino hispanic",
    "fairface age: more than 70; gender: female; race: southeast asian",
    "fairface age: 0-2; gender: male; race: east asian",
    "fairface age: 3-9; gender: male; race: east asian",
    "fairface age: 50-59; gender: female; race: east asian",
    "fairface age: 30-39; gender: male; race: white",
    "fairface age: 20-29; gender: female; race: latino hispanic",
    "fairface age: 60-69; gender: male; race: southeast asian",
    "fairface age: 10-19; gender: female; race: black",
]
IDS = [f"fairface/train/{i}" for i in range(1, 11)] + [f"fairface/val/{i}" for i in range(1, 7)]
SOURCES = [f"fairface_label_train.csv:{i}" for i in range(2, 12)] + [f"fairface_label_val.csv:{i}" for i in range(2, 8)]
PAD025 = "fairface-img-margin025-trainval"
PAD125 = "fairface-img-margin125-trainval"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Both padding variants and the label files (images written once per module)."""
    root = tmp_path_factory.mktemp("written") / "fairface"
    fixture.write_sample(root, paddings=("0.25", "1.25"))
    return root


@pytest.fixture
def sample(written, tmp_path):
    """A fresh copy holding only the padding-0.25 images, as most users have it."""
    root = tmp_path / "fairface"
    shutil.copytree(written, root, ignore=shutil.ignore_patterns(PAD125))
    return root


def test_sample_rows_exact(sample, run_convert):
    got = run_convert("fairface", sample)
    assert got.rows[0] == {
        "dataset": "fairface",
        "image": f"{PAD025}/train/1.jpg",
        "image_id": "fairface/train/1",
        "box": None,
        "split": "train",
        "kind": "attributes",
        "text": "fairface age: 50-59; gender: male; race: east asian",
        "attributes": [
            {"key": "age", "value": "50-59"},
            {"key": "gender", "value": "male"},
            {"key": "race", "value": "east asian"},
        ],
        "source": "fairface_label_train.csv:2",
        "person": None,
        "origin_id": None,
    }
    assert [r["text"] for r in got.rows] == TEXTS
    assert [r["image_id"] for r in got.rows] == IDS
    assert [r["source"] for r in got.rows] == SOURCES
    assert [r["split"] for r in got.rows] == ["train"] * 10 + ["val"] * 6
    assert got.rows[10]["image"] == f"{PAD025}/val/1.jpg"
    assert not got.rejects
    assert got.summary["splits"] == {"train": 10, "val": 6, "test": 0}
    assert got.summary["notes"] == [f"images: padding 0.25 ({PAD025})"]
    assert got.summary["expected"]["official"] == {"train": 86744, "val": 10954, "total": 97698}


def test_both_paddings_default_and_option(written, run_convert):
    default = run_convert("fairface", written)
    assert default.rows[0]["image"] == f"{PAD025}/train/1.jpg"
    assert default.summary["notes"] == [
        f"images: padding 0.25 ({PAD025}); padding 1.25 also present (option padding=1.25)"
    ]
    wide = run_convert("fairface", written, "padding=1.25")
    assert [r["image"] for r in wide.rows][:2] == [f"{PAD125}/train/1.jpg", f"{PAD125}/train/2.jpg"]
    assert [r["image_id"] for r in wide.rows] == IDS  # the same faces: the same ids
    assert [r["text"] for r in wide.rows] == TEXTS


def test_only_the_wide_padding_is_found_by_itself(written, tmp_path, run_convert):
    root = tmp_path / "fairface"
    shutil.copytree(written, root, ignore=shutil.ignore_patterns(PAD025))
    got = run_convert("fairface", root)
    assert got.rows[-1]["image"] == f"{PAD125}/val/6.jpg"
    assert got.summary["notes"] == [f"images: padding 1.25 ({PAD125})"]
    with pytest.raises(UserError, match=r"padding=0.25 asked for, but only fairface-img-margin125-trainval found"):
        convert("fairface", root, tmp_path / "out", ["padding=0.25"])


def test_flat_layout_and_extra_folder_level(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "flat" / "FairFace", flat=True)
    got = run_convert("fairface", tmp_path / "flat")
    assert [r["text"] for r in got.rows] == TEXTS
    assert got.rows[0]["image"] == "FairFace/train/1.jpg"
    assert got.rows[0]["source"] == "FairFace/fairface_label_train.csv:2"
    assert got.rows[0]["image_id"] == "fairface/train/1"
    assert "padding unknown" in got.summary["notes"][0]


def test_spreadsheet_dates_are_repaired_or_rejected(tmp_path, run_convert):
    root = tmp_path / "fairface"
    fixture.write_sample(root, spreadsheet=True)
    assert "val/1.jpg,9-Mar,Male" in (root / "fairface_label_val.csv").read_text()
    repaired = run_convert("fairface", root)
    assert [r["text"] for r in repaired.rows] == TEXTS
    assert repaired.summary["notes"][0] == (
        "repaired 4 age values a spreadsheet had turned into dates: '19-Oct' -> 10-19 (2), '9-Mar' -> 3-9 (2)"
    )
    rejected = run_convert("fairface", root, "repair_ages=false")
    assert rejected.reasons() == {
        "spreadsheet date": [
            "fairface_label_train.csv:4",
            "fairface_label_train.csv:8",
            "fairface_label_val.csv:2",
            "fairface_label_val.csv:7",
        ]
    }
    assert rejected.rejects[0]["detail"] == "age='9-Mar' is bin 3-9 turned into a date"
    assert len(rejected.rows) == 12


@pytest.mark.parametrize(
    "value, expected",
    [
        ("9-Mar", "3-9"),
        ("Mar-09", "3-9"),
        ("3-Sep", "3-9"),
        ("19-Oct", "10-19"),
        ("Oct-19", "10-19"),
        ("2019-03-09", "3-9"),
        ("09.03.2019", "3-9"),
        ("3/9/2019", "3-9"),
        ("43533", "3-9"),
        ("Feb-00", "0-2"),
        ("19-October", "10-19"),
        ("2-Jan", None),
        ("70+", None),
        ("Martian", None),
        ("9-Foo", None),
        ("20-29-30", None),
    ],
)
def test_spreadsheet_date_forms(value, expected):
    labels = fixture.LABELS
    assert bin_from_date(value, labels["age"], labels["spreadsheet_months"]) == expected


def test_bad_rows_are_rejected_with_reasons(sample, run_convert):
    train = sample / "fairface_label_train.csv"
    lines = train.read_text().splitlines()
    lines[2] = "train/2.jpg,30-39,Female"  # malformed: too few fields
    lines[3] = "train/3.jpg,3-9,Female,Martian,False"  # unknown race
    lines[4] = "train/4.jpg,70+,Female,Indian,True"  # unknown age bin
    lines += [
        "../../etc/passwd.jpg,20-29,Male,White,True",  # escapes the root
        "train/../../../x.jpg,20-29,Male,White,True",  # escapes the root behind the prefix
        "test/1.jpg,20-29,Male,White,True",  # no train/ or val/ prefix
        "train/99.jpg,20-29,Male,White,True",  # image not on disk
        lines[1],
    ]  # duplicate of train/1.jpg
    train.write_text("\n".join(lines) + "\n\n")
    (sample / PAD025 / "val" / "2.jpg").unlink()
    got = run_convert("fairface", sample)
    assert got.reasons() == {
        "malformed line": ["fairface_label_train.csv:3"],
        "duplicate line": ["fairface_label_train.csv:16"],
        "unknown label value": ["fairface_label_train.csv:5", "fairface_label_train.csv:4"],
        "path escapes root": ["fairface_label_train.csv:12", "fairface_label_train.csv:13"],
        "no split": ["fairface_label_train.csv:14"],
        "image missing": ["fairface_label_train.csv:15", "fairface_label_val.csv:3"],
    }
    details = {r["source"]: r["detail"] for r in got.rejects}
    assert details["fairface_label_train.csv:5"] == "age='70+'"
    assert details["fairface_label_train.csv:4"] == "race='Martian'"
    assert len(got.rows) == 16 - 4  # three lines spoiled, one image deleted; the five added lines all rejected


def test_missing_label_file_is_a_clear_error(sample):
    (sample / "fairface_label_val.csv").unlink()
    with pytest.raises(UserError, match=r"no file named fairface_label_val.csv under .*fairface"):
        convert("fairface", sample, sample / "out")


def test_wrong_header_names_the_file_and_line(sample):
    val = sample / "fairface_label_val.csv"
    val.write_text(val.read_text().replace("race", "ethnicity", 1))
    with pytest.raises(UserError, match=r"fairface_label_val.csv:1: header lacks column\(s\) race"):
        convert("fairface", sample, sample / "out")


def test_missing_image_folder_and_bad_option(sample):
    with pytest.raises(UserError, match=r"option padding='0.5'; expected one of 0.25, 1.25"):
        convert("fairface", sample, sample / "out", ["padding=0.5"])
    shutil.rmtree(sample / PAD025 / "val")
    with pytest.raises(UserError, match=r"no folder named val under .*fairface-img-margin025-trainval"):
        convert("fairface", sample, sample / "out")
