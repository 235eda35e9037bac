import shutil

import numpy as np
import pytest

from common.errors import UserError
from converters import convert
from converters.fixtures import affectnet as fixture

TRAIN = "Manually_Annotated_file_lists/training.csv"
VAL = "Manually_Annotated_file_lists/validation.csv"


def name(i: int, ext: str = ".jpg") -> str:
    return fixture.file_name(i, ext)


EXPECTED_CSV = [  # (image below Manually_Annotated_Images/, box, split, text, source)
    (
        f"1/{name(1)}",
        [30, 25, 150, 145],
        "train",
        "affectnet expression: happy; valence: 0.79; arousal: -0.06",
        f"{TRAIN}:2",
    ),
    (
        f"1/{name(2, '.JPG')}",
        [10, 12, 160, 160],
        "train",
        "affectnet expression: neutral; valence: 0.00; arousal: 0.12",
        f"{TRAIN}:3",
    ),
    (
        f"2/{name(3, '.png')}",
        [0, 20, 104, 135],
        "train",
        "affectnet expression: anger; valence: -0.50; arousal: 0.75",
        f"{TRAIN}:4",
    ),
    (f"5/{name(9)}", [25, 20, 155, 150], "train", "affectnet expression: contempt; valence: 0.35", f"{TRAIN}:10"),
    (
        f"5/{name(10)}",
        [15, 15, 115, 125],
        "train",
        "affectnet expression: fear; valence: -0.67; arousal: 0.90",
        f"{TRAIN}:11",
    ),
    (
        f"6/{name(11)}",
        [22, 18, 162, 158],
        "val",
        "affectnet expression: surprise; valence: 0.60; arousal: 0.50",
        f"{VAL}:2",
    ),
    (
        f"6/{name(12, '.JPG')}",
        [30, 40, 150, 165],
        "val",
        "affectnet expression: disgust; valence: -0.70; arousal: 0.30",
        f"{VAL}:3",
    ),
    (
        f"7/{name(13)}",
        [12, 10, 172, 160],
        "val",
        "affectnet expression: sad; valence: -0.81; arousal: -0.20",
        f"{VAL}:4",
    ),
]
SAMPLE_REJECTS = {
    f"{TRAIN}:5": ("no expression", "expression: none"),
    f"{TRAIN}:6": ("no expression", "expression: uncertain"),
    f"{TRAIN}:7": ("not a face", "expression: non-face"),
    f"{TRAIN}:8": ("missing value", "face_x='NULL'"),
    f"{TRAIN}:9": ("degenerate box", "face_x=20, face_y=30, face_width=-45, face_height=60"),
}


def by_source(rejects) -> dict:
    return {r["source"]: (r["reason"], r["detail"]) for r in rejects}


def test_csv_sample_rows_exact(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "affectnet")
    got = run_convert("affectnet", tmp_path / "affectnet")
    assert got.rows[0] == {
        "dataset": "affectnet",
        "image": f"Manually_Annotated_Images/1/{name(1)}",
        "image_id": f"affectnet/1/{name(1)[:-4]}",
        "box": [30, 25, 150, 145],
        "split": "train",
        "kind": "attributes",
        "text": "affectnet expression: happy; valence: 0.79; arousal: -0.06",
        "attributes": [
            {"key": "expression", "value": "happy"},
            {"key": "valence", "value": "0.79"},
            {"key": "arousal", "value": "-0.06"},
        ],
        "source": f"{TRAIN}:2",
        "person": None,
        "origin_id": None,
    }
    assert [(r["image"], r["box"], r["split"], r["text"], r["source"]) for r in got.rows] == [
        (f"Manually_Annotated_Images/{image}", *rest) for image, *rest in EXPECTED_CSV
    ]
    assert [r["image_id"] for r in got.rows] == [f"affectnet/{image.rsplit('.', 1)[0]}" for image, *_ in EXPECTED_CSV]
    assert got.rows[3]["attributes"] == [
        {"key": "expression", "value": "contempt"},
        {"key": "valence", "value": "0.35"},
    ]
    assert by_source(got.rejects) == SAMPLE_REJECTS
    assert got.summary["splits"] == {"train": 5, "val": 3, "test": 0}
    assert got.summary["expected"]["official"] == {"train": 414799, "val": 5500, "total": 420299}
    assert got.summary["notes"] == ["csv release"]


def test_keep_uncertain_keeps_none_and_uncertain_but_not_non_faces(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "affectnet")
    got = run_convert("affectnet", tmp_path / "affectnet", "keep_uncertain=true")
    kept = {r["source"]: r["text"] for r in got.rows}
    assert kept[f"{TRAIN}:5"] == "affectnet expression: none; valence: 0.10; arousal: 0.20"
    assert kept[f"{TRAIN}:6"] == "affectnet expression: uncertain"  # -2 / -2: no valence, no arousal
    assert by_source(got.rejects) == {k: v for k, v in SAMPLE_REJECTS.items() if v[0] != "no expression"}
    with pytest.raises(UserError, match="affectnet: option keep_uncertain='maybe' is not a valid bool"):
        convert("affectnet", tmp_path / "affectnet", tmp_path / "out", ["keep_uncertain=maybe"])


def test_extra_manually_annotated_level(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "affectnet", extra_level=True)
    csv = tmp_path / "affectnet" / TRAIN
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())  # saved by a spreadsheet: a BOM
    got = run_convert("affectnet", tmp_path / "affectnet")
    assert [r["image"] for r in got.rows] == [
        f"Manually_Annotated/Manually_Annotated_Images/{i}" for i, *_ in EXPECTED_CSV
    ]
    assert [r["text"] for r in got.rows] == [e[3] for e in EXPECTED_CSV]


def test_extension_case_differing_on_disk_is_matched(tmp_path, run_convert):
    root = tmp_path / "affectnet"
    fixture.write_sample(root)
    images = root / "Manually_Annotated_Images"
    (images / "1" / name(1)).rename(images / "1" / name(1, ".JPG"))  # the CSV still says .jpg
    got = run_convert("affectnet", root)
    assert got.rows[0]["image"] == f"Manually_Annotated_Images/1/{name(1, '.JPG')}"
    assert got.rows[0]["image_id"] == f"affectnet/1/{name(1)[:-4]}"
    assert by_source(got.rejects) == SAMPLE_REJECTS


def test_bad_rows_are_rejected_with_reasons(tmp_path, run_convert):
    root = tmp_path / "affectnet"
    fixture.write_sample(root)
    csv = root / TRAIN
    lines = csv.read_text().splitlines()
    marks = fixture.landmarks("x")
    lines += [
        f"8/{name(20)},10,10,50",  # 12: malformed, too few fields
        fixture.csv_line(8, name(21), 10, 10, 50, 50, "11", "0.1", "0.1", marks),  # 13: unknown expression
        fixture.csv_line(8, name(22), 10, "abc", 50, 50, "1", "0.1", "0.1", marks),  # 14: not a number
        fixture.csv_line(8, name(23), 10, 10, 50, 50, "1", "1.5", "0.1", marks),  # 15: valence out of range
        fixture.csv_line(8, name(24), 10, 10, 50, 50, "1", "0.1", "0.1", marks),  # 16: image not on disk
        fixture.csv_line("../..", "secret.jpg", 10, 10, 50, 50, "1", "0.1", "0.1", marks),  # 17: escapes the root
        lines[1].replace(",1,0.785714,", ",2,0.5,"),  # 18: line 2's image again
        "",  # 19: blank, not a record
        ",,,,,1.0;2.0,,,",  # 20: a record with nothing but landmarks
        "",
    ]
    csv.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode())  # BOM, CRLF line ends, a blank line
    got = run_convert("affectnet", root)
    assert by_source(got.rejects) == {
        **SAMPLE_REJECTS,
        f"{TRAIN}:12": ("malformed line", "expected 9 fields, found 4"),
        f"{TRAIN}:13": ("unknown label value", "expression='11'"),
        f"{TRAIN}:14": ("malformed line", "face_y='abc' is not a number"),
        f"{TRAIN}:15": ("value out of range", "valence=1.5 outside [-1, 1]"),
        f"{TRAIN}:16": ("image missing", f"8/{name(24)}"),
        f"{TRAIN}:17": ("path escapes root", "../../secret.jpg"),
        f"{TRAIN}:18": ("duplicate image", f"same as {TRAIN}:2"),
        f"{TRAIN}:20": ("missing value", "subDirectory_filePath=''"),
    }
    assert [r["text"] for r in got.rows] == [e[3] for e in EXPECTED_CSV]
    assert got.summary["records_in"] == 13 + 8


def test_quoted_csv_with_bom_gives_the_same_rows(tmp_path, run_convert):
    root = tmp_path / "affectnet"
    fixture.write_sample(root)
    csv = root / VAL
    lines = csv.read_text().splitlines()
    quoted = [lines[0]] + [f'"{path}",{rest}' for path, rest in (line.split(",", 1) for line in lines[1:])]
    csv.write_bytes(b"\xef\xbb\xbf" + "\n".join(quoted).encode() + b"\n")
    got = run_convert("affectnet", root)
    assert [(r["text"], r["source"]) for r in got.rows if r["split"] == "val"] == [
        (e[3], e[4]) for e in EXPECTED_CSV[5:]
    ]


def test_undecodable_bytes_do_not_stop_the_conversion(tmp_path, run_convert):
    root = tmp_path / "affectnet"
    fixture.write_sample(root)
    csv = root / VAL
    csv.write_bytes(csv.read_bytes() + b"7/caf\xe9.jpg,1,1,20,20,NULL,1,0.5,0.5\n")  # a Latin-1 name
    got = run_convert("affectnet", root)
    assert by_source(got.rejects)[f"{VAL}:5"] == ("image missing", "7/caf\ufffd.jpg")
    assert [r["text"] for r in got.rows] == [e[3] for e in EXPECTED_CSV]


def test_missing_or_wrong_annotation_files_are_clear_errors(tmp_path):
    root = tmp_path / "affectnet"
    fixture.write_sample(root)
    (root / VAL).unlink()
    with pytest.raises(UserError, match=r"no file named validation.csv under .*affectnet"):
        convert("affectnet", root, tmp_path / "out")
    (root / VAL).write_text((root / TRAIN).read_text().replace(",expression,", ",emotion,", 1))
    with pytest.raises(
        UserError, match=r"validation.csv:1: header lacks column\(s\) expression \(found: subDirectory_filePath"
    ):
        convert("affectnet", root, tmp_path / "out")
    (root / VAL).write_text("\n\n")
    with pytest.raises(UserError, match=r"validation.csv: empty file, expected a CSV header"):
        convert("affectnet", root, tmp_path / "out")
    assert not (tmp_path / "out" / "affectnet.parquet").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        UserError, match=r"found neither the CSV release .* nor the npy release \(train_set/, val_set/\)"
    ):
        convert("affectnet", tmp_path / "empty", tmp_path / "out")


def test_npy_release_rows_exact(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "affectnet", release="npy")
    got = run_convert("affectnet", tmp_path / "affectnet")
    assert got.rows[1] == {
        "dataset": "affectnet",
        "image": "train_set/images/1.jpg",
        "image_id": "affectnet/train_set/1",
        "box": None,
        "split": "train",
        "kind": "attributes",
        "text": "affectnet expression: neutral; valence: -0.22; arousal: 0.30",
        "attributes": [
            {"key": "expression", "value": "neutral"},
            {"key": "valence", "value": "-0.22"},
            {"key": "arousal", "value": "0.30"},
        ],
        "source": "train_set/annotations/1_exp.npy",
        "person": None,
        "origin_id": None,
    }
    assert [(r["image_id"], r["split"], r["text"]) for r in got.rows] == [
        ("affectnet/train_set/0", "train", "affectnet expression: happy; valence: 0.79; arousal: -0.06"),
        ("affectnet/train_set/1", "train", "affectnet expression: neutral; valence: -0.22; arousal: 0.30"),
        ("affectnet/train_set/2", "train", "affectnet expression: anger; valence: -0.50; arousal: 0.75"),
        ("affectnet/train_set/3", "train", "affectnet expression: surprise; valence: 0.60; arousal: 0.50"),
        ("affectnet/val_set/4", "val", "affectnet expression: disgust; valence: -0.70; arousal: 0.30"),
        ("affectnet/val_set/5", "val", "affectnet expression: contempt; valence: 0.35; arousal: -0.12"),
    ]
    assert not got.rejects
    assert got.summary["expected"]["official"] == {"train": 287651, "val": 3999, "total": 291650}


def test_npy_release_bad_files(tmp_path, run_convert):
    root = tmp_path / "affectnet"
    fixture.write_sample(root, release="npy")
    notes = root / "train_set" / "annotations"
    (notes / "0_exp.npy").unlink()  # image without its expression
    (root / "train_set" / "images" / "1.jpg").unlink()  # annotations without their image
    (notes / "2_val.npy").write_bytes(b"not numpy at all")
    (notes / "3_aro.npy").write_bytes(fixture.npy_bytes(np.array([0.1, 0.2])))
    for suffix, value in (("exp", "12"), ("val", "0.1"), ("aro", "0.2")):  # unknown expression code
        (notes / f"10_{suffix}.npy").write_bytes(fixture.npy_bytes(np.array(value)))
    (root / "train_set" / "images" / "10.jpg").write_bytes(b"")
    (root / "val_set" / "annotations" / "5_aro.npy").unlink()  # arousal left out
    got = run_convert("affectnet", root)
    assert by_source(got.rejects) == {
        "train_set/annotations/0_exp.npy": ("missing value", "no file train_set/annotations/0_exp.npy"),
        "train_set/annotations/1_exp.npy": ("image missing", "no image of that id in train_set/images"),
        "train_set/annotations/2_exp.npy": ("unreadable annotation", "2_val.npy: not a .npy file"),
        "train_set/annotations/3_exp.npy": (
            "unreadable annotation",
            "3_aro.npy: expected a single value, found shape (2,)",
        ),
        "train_set/annotations/10_exp.npy": ("unknown label value", "expression='12'"),
    }
    assert [r["text"] for r in got.rows] == [
        "affectnet expression: disgust; valence: -0.70; arousal: 0.30",
        "affectnet expression: contempt; valence: 0.35",
    ]
    assert got.summary["notes"] == ["npy release", "1 face(s) without a _aro.npy file: arousal left out"]


def test_full_size_proportions(tmp_path, run_convert):
    fixture.write_full_size(tmp_path / "csv", n=800)
    got = run_convert("affectnet", tmp_path / "csv")
    parsed = fixture.baseline_parse(tmp_path / "csv")
    expressions = np.concatenate([df["expression"].to_numpy() for df in parsed.values()])
    assert got.summary["records_in"] == len(expressions) == 800 + 10
    assert len(got.rows) == int((expressions <= 7).sum())
    assert got.summary["rejects"]["by_reason"] == {
        "no expression": int(((expressions == 8) | (expressions == 9)).sum()),
        "not a face": int((expressions == 10).sum()),
    }
    fixture.write_full_size(tmp_path / "npy", n=100, release="npy")
    got = run_convert("affectnet", tmp_path / "npy")
    assert len(got.rows) == 100 + 1 and not got.rejects


def test_release_option_picks_the_npy_release(tmp_path, run_convert):
    root = tmp_path / "affectnet"
    fixture.write_sample(root)
    fixture.write_sample(root, release="npy")
    assert run_convert("affectnet", root).summary["notes"] == ["csv release"]
    got = run_convert("affectnet", root, "release=npy")
    assert got.summary["notes"] == ["npy release"] and len(got.rows) == 6
    shutil.rmtree(root / "val_set")
    with pytest.raises(UserError, match="no folder named val_set under"):
        convert("affectnet", root, tmp_path / "out", ["release=npy"])
