import shutil
from collections import defaultdict

import pytest

from common.errors import UserError
from converters import convert
from converters.fixtures import expw as fixture

LABELS = "label/label.lst"


def test_sample_rows_exact(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "expw")
    got = run_convert("expw", tmp_path / "expw")
    assert got.rows[0] == {
        "dataset": "expw",
        "image": "image/origin/afraid_African_214.jpg",
        "image_id": "expw/afraid_African_214_0",
        "box": [275, 33, 342, 100],
        "split": "train",
        "kind": "attributes",
        "text": "expw expression: fear",
        "attributes": [{"key": "expression", "value": "fear"}],
        "source": "label/label.lst:1",
        "person": None,
        "origin_id": None,
    }
    assert [(r["image_id"], r["text"], r["box"], r["split"]) for r in got.rows] == [
        ("expw/afraid_African_214_0", "expw expression: fear", [275, 33, 342, 100], "train"),
        ("expw/afraid_African_214_1", "expw expression: fear", [120, 40, 190, 110], "train"),
        ("expw/angry_child_3_0", "expw expression: angry", [88, 52, 170, 134], "val"),
        ("expw/happy_family_104_0", "expw expression: happy", [30, 60, 110, 140], "train"),
        ("expw/happy_family_104_1", "expw expression: happy", [150, 0, 230, 70], "train"),  # top -8 clamped
        ("expw/happy_family_104_2", "expw expression: neutral", [260, 70, 330, 140], "train"),
        ("expw/surprised_actor_3_0", "expw expression: surprise", [0, 20, 90, 95], "test"),  # left -5 clamped
        ("expw/sad_bride_14_0", "expw expression: sad", [140, 44, 230, 134], "test"),
        ("expw/disgusted_woman_27_0", "expw expression: disgust", [160, 35, 250, 125], "val"),
    ]
    assert got.rejects == [
        {"source": "label/label.lst:10", "reason": "duplicate line", "detail": "same as label/label.lst:4"}
    ]
    assert got.summary["splits"] == {"train": 5, "val": 2, "test": 2}
    assert got.summary["expected"] == {"official": {"total": 91793}, "paper": 92000}


def test_extra_folder_level_and_no_image_level(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "nested" / "ExpW")
    flat = tmp_path / "flat"
    fixture.write_sample(flat)
    (flat / "image" / "origin").rename(flat / "origin")  # origin.7z extracted straight into the root
    (flat / "label" / "label.lst").rename(flat / "label.lst")
    nested, flat_rows = run_convert("expw", tmp_path / "nested"), run_convert("expw", flat)
    assert nested.rows[0]["image"] == "ExpW/image/origin/afraid_African_214.jpg"
    assert nested.rows[0]["source"] == "ExpW/label/label.lst:1"
    assert flat_rows.rows[0]["image"] == "origin/afraid_African_214.jpg"
    for got in (nested, flat_rows):
        assert [r["text"] for r in got.rows] == [
            r["text"] for r in run_convert("expw", tmp_path / "nested" / "ExpW").rows
        ]
        assert [r["image_id"] for r in got.rows][:2] == ["expw/afraid_African_214_0", "expw/afraid_African_214_1"]


def test_bad_lines_are_rejected_with_reasons(tmp_path, run_convert):
    root = tmp_path / "expw"
    fixture.write_sample(root)
    lines = fixture.SAMPLE_LINES[:9] + [
        "sad_bride_14.jpg 1 44 140 230",  # 11: malformed, too few fields
        "sad_bride_14.jpg 2 44 140 230 134 66.1 9",  # 12: unknown label
        "sad_bride_14.jpg 3 44 abc 230 134 66.1 4",  # 13: left is not a number
        "sad_bride_14.jpg 4 44 230 140 134 66.1 4",  # 14: right < left
        "missing_scene_1.jpg 0 10 10 50 50 70.0 3",  # 15: image not on disk
        "../../secret.jpg 0 10 10 50 50 70.0 3",  # 16: escapes the root
        "sad_bride_14.jpg 0 40 140 230 134 66.1 4",  # 17: face 0 again, other box
        "",
    ]
    fixture.write_labels(root, lines[:9] + [lines[3]] + lines[9:])  # 10: exact duplicate of line 4
    got = run_convert("expw", root)
    assert {r["source"].split(":")[1]: (r["reason"], r["detail"]) for r in got.rejects} == {
        "10": ("duplicate line", "same as label/label.lst:4"),
        "11": ("malformed line", "expected 8 fields, found 5"),
        "12": ("unknown label value", "expression_label='9'"),
        "13": ("malformed line", "face_box_left='abc' is not a number"),
        "14": ("degenerate box", "left=230, top=44, right=140, bottom=134"),
        "15": ("image missing", "image/origin/missing_scene_1.jpg"),
        "16": ("path escapes root", "image/origin/../../secret.jpg"),
        "17": ("duplicate face", "same as label/label.lst:8"),
    }
    assert len(got.rows) == 9 and got.summary["records_in"] == 17


def test_missing_label_file_is_a_clear_error(tmp_path):
    root = tmp_path / "expw"
    fixture.write_sample(root)
    (root / "label" / "label.lst").unlink()
    with pytest.raises(UserError, match=r"no file named label.lst under .*expw"):
        convert("expw", root, tmp_path / "out")
    assert not (tmp_path / "out" / "expw.parquet").exists()


def test_missing_image_folder_is_a_clear_error(tmp_path):
    root = tmp_path / "expw"
    fixture.write_sample(root)
    shutil.rmtree(root / "image")
    with pytest.raises(UserError, match=r"no folder named origin under"):
        convert("expw", root, tmp_path / "out")


def test_wrong_layout_names_the_file(tmp_path):
    root = tmp_path / "expw"
    fixture.write_sample(root)
    (root / "label" / "label.lst").write_text("image_name,face_id,expression\nangry_child_3.jpg,0,0\n")
    with pytest.raises(UserError, match=r"label.lst: no line has the 8 space-separated columns image_name"):
        convert("expw", root, tmp_path / "out")


def test_faces_of_one_scene_share_a_split(tmp_path, run_convert):
    fixture.write_full_size(tmp_path / "expw", n=1500)
    got = run_convert("expw", tmp_path / "expw")
    assert len(got.rows) == 1500 and not got.rejects
    splits = defaultdict(set)
    for r in got.rows:
        splits[r["image"]].add(r["split"])
    assert all(len(s) == 1 for s in splits.values())
    assert len(splits) < 1350  # several faces per scene
    assert {s for (s,) in splits.values()} == {"train", "val", "test"}
