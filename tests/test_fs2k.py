import json
import shutil

import pytest

from common.errors import UserError
from converters import convert
from converters.fixtures import fs2k as fixture

TEXTS = [
    (
        "fs2k hair: with hair; hair color: brown; gender: female; earring: false; smile: true; frontal face: true; "
        "style: sketch style 1; lip color: rosy brown; eye color: dim gray; skin color: burly wood"
    ),
    (
        "fs2k hair: with hair; hair color: red; gender: male; earring: false; smile: false; frontal face: false; "
        "style: sketch style 1; lip color: sienna; eye color: sienna; skin color: peru"
    ),
    (
        "fs2k hair: without hair; hair color: none; gender: male; earring: false; smile: true; frontal face: true; "
        "style: sketch style 2; skin color: sandy brown"
    ),
    (
        "fs2k hair: with hair; hair color: golden; gender: female; earring: true; smile: true; frontal face: true; "
        "style: sketch style 3; lip color: crimson; eye color: steel blue; skin color: wheat"
    ),
    (
        "fs2k hair: with hair; hair color: black; gender: male; earring: false; smile: true; frontal face: true; "
        "style: sketch style 1; lip color: medium violet red; eye color: dark slate gray"
    ),
    (
        "fs2k hair: with hair; hair color: black; gender: male; earring: false; smile: false; frontal face: true; "
        "style: sketch style 3; lip color: firebrick; eye color: saddle brown; skin color: rosy brown"
    ),
    (
        "fs2k hair: with hair; hair color: brown; gender: female; earring: true; smile: false; frontal face: false; "
        "style: sketch style 2; lip color: indian red; eye color: slate gray; skin color: tan"
    ),
]
IMAGES = [
    "photo/photo1/image0001.jpg",
    "photo/photo1/image0003.jpg",
    "photo/photo2/image0002.JPG",
    "photo/photo3/image0005.jpg",
    "photo/photo1/image0007.jpg",
    "photo/photo3/image0012.png",
    "photo/photo2/image0009.jpg",
]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("written") / "fs2k"
    fixture.write_sample(root)
    return root


@pytest.fixture
def sample(written, tmp_path):
    """A fresh copy of the sample for each test (the photos are written once per module)."""
    return shutil.copytree(written, tmp_path / "fs2k")


def edit_records(root, filename, change):
    path = root / filename
    records = json.loads(path.read_text())
    change(records)
    path.write_text(json.dumps(records))


def test_sample_rows_exact(sample, run_convert):
    got = run_convert("fs2k", sample)
    assert not got.rejects
    first = got.rows[0]
    assert first == {
        "dataset": "fs2k",
        "image": "photo/photo1/image0001.jpg",
        "image_id": "fs2k/photo1/image0001",
        "box": None,
        "split": "train",
        "kind": "attributes",
        "text": TEXTS[0],
        "attributes": first["attributes"],
        "source": "anno_train.json:0",
        "person": None,
        "origin_id": None,
    }
    assert first["attributes"][-3:] == [
        {"key": "lip color", "value": "rosy brown"},
        {"key": "eye color", "value": "dim gray"},
        {"key": "skin color", "value": "burly wood"},
    ]
    assert [r["text"] for r in got.rows] == TEXTS
    assert [r["image"] for r in got.rows] == IMAGES
    assert [r["split"] for r in got.rows] == ["train"] * 4 + ["test"] * 3
    assert [r["source"] for r in got.rows][3:5] == ["anno_train.json:3", "anno_test.json:0"]
    assert got.summary["splits"] == {"train": 4, "val": 0, "test": 3}
    assert got.summary["expected"] == {"official": {"train": 1058, "test": 1046, "total": 2104}, "paper": 2000}
    assert got.summary["notes"] == [
        "lip color: no usable value (NaN, [] or absent) in 1 of 7 records; that pair is left out of their texts",
        "eye color: no usable value (NaN, [] or absent) in 1 of 7 records; that pair is left out of their texts",
        "skin color: no usable value (NaN, [] or absent) in 1 of 7 records; that pair is left out of their texts",
    ]


def test_readme_key_skin_patch_and_an_extra_folder_level(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "download" / "FS2K", skin_key="skin_patch")
    got = run_convert("fs2k", tmp_path / "download")
    assert [r["text"] for r in got.rows] == TEXTS
    assert got.rows[0]["image"] == "FS2K/photo/photo1/image0001.jpg"
    assert got.rows[0]["image_id"] == "fs2k/photo1/image0001"
    assert got.rows[0]["source"] == "FS2K/anno_train.json:0"


def test_image_names_match_whatever_the_case_or_extension(sample, run_convert):
    (sample / "photo" / "photo1" / "image0003.jpg").rename(sample / "photo" / "photo1" / "IMAGE0003.jpeg")
    (sample / "photo" / "photo3").rename(sample / "photo" / "Photo3")
    edit_records(sample, "anno_train.json", lambda r: r[0].update(image_name="photo1/image0001.jpg"))
    got = run_convert("fs2k", sample)
    assert [r["text"] for r in got.rows] == TEXTS
    assert [r["image"] for r in got.rows][:4] == [
        "photo/photo1/image0001.jpg",
        "photo/photo1/IMAGE0003.jpeg",
        "photo/photo2/image0002.JPG",
        "photo/Photo3/image0005.jpg",
    ]


def test_without_skin_sampling_no_photo_is_opened(sample, run_convert):
    (sample / "photo" / "photo1" / "image0001.jpg").write_bytes(b"not a jpeg")
    got = run_convert("fs2k", sample, "skin_colour=false")
    assert not got.rejects
    assert got.rows[0]["text"] == TEXTS[0].removesuffix("; skin color: burly wood")
    assert all("skin color" not in r["text"] for r in got.rows)
    assert "skin colour not sampled (option skin_colour=false)" in got.summary["notes"]


def test_bad_records_are_rejected_with_reasons(sample, run_convert):
    def change(records):
        good = dict(records[0])
        records[1]["hair"] = 7  # unknown code
        del records[2]["gender"]  # missing value
        records[3]["skin_color"] = [800, 10]  # just right of the 800x600 photo: kept, without its skin colour
        records.append("photo1/image0001")  # not an object
        records.append({**good, "image_name": "photo1/image9999"})  # no such photo
        records.append({**good, "image_name": "../../../etc/passwd"})  # escapes the root
        records.append(dict(good))  # duplicate of record 0
        records.append({**good, "image_name": "photo3/image0012", "skin_color": [299, 399]})  # corner pixel: kept

    edit_records(sample, "anno_train.json", change)
    edit_records(sample, "anno_test.json", lambda r: r.__delitem__(1))  # frees photo3/image0012
    (sample / "photo" / "photo2" / "image0009.jpg").write_bytes(b"\xff\xd8 truncated")
    got = run_convert("fs2k", sample)
    assert got.reasons() == {
        "unknown label value": ["anno_train.json:1"],
        "missing value": ["anno_train.json:2"],
        "malformed record": ["anno_train.json:4"],
        "image missing": ["anno_train.json:5"],
        "path escapes root": ["anno_train.json:6"],
        "duplicate line": ["anno_train.json:7"],
        "unreadable image": ["anno_test.json:1"],
    }
    details = {r["reason"]: r["detail"] for r in got.rejects}
    assert details["unknown label value"] == "hair='7'"
    assert details["missing value"] == "no value for gender"
    assert details["unreadable image"].startswith("photo/photo2/image0009.jpg: ")
    assert [r["source"] for r in got.rows] == [
        "anno_train.json:0",
        "anno_train.json:3",
        "anno_train.json:8",
        "anno_test.json:0",
    ]
    assert "skin color" not in got.rows[1]["text"] and "lip color: " in got.rows[1]["text"]
    assert (
        "skin point outside the photo in 1 records (e.g. anno_train.json:3: skin point [800, 10] outside the "
        "800x600 photo image0005.jpg): their skin colour is left out of their texts, their other labels kept"
        in got.summary["notes"]
    )
    assert got.rows[2]["image"] == "photo/photo3/image0012.png" and "skin color: " in got.rows[2]["text"]


def test_missing_annotation_file_is_a_clear_error(sample, tmp_path):
    (sample / "anno_test.json").unlink()
    with pytest.raises(UserError, match=r"no file named anno_test.json under .*fs2k"):
        convert("fs2k", sample, tmp_path / "out")
    assert not (tmp_path / "out" / "fs2k.parquet").exists()


def test_broken_json_names_the_file_line_and_column(sample, tmp_path):
    path = sample / "anno_train.json"
    path.write_text(path.read_text()[:-40])
    with pytest.raises(UserError, match=r"anno_train.json:1:\d+: not valid JSON"):
        convert("fs2k", sample, tmp_path / "out")
    path.write_text('{"image_name": "photo1/image0001"}')
    with pytest.raises(UserError, match=r"anno_train.json: expected a JSON array of FS2K records, found a dict"):
        convert("fs2k", sample, tmp_path / "out")


def test_missing_photo_folder_and_bad_option_are_clear_errors(sample, tmp_path):
    with pytest.raises(UserError, match=r"option patch=0"):
        convert("fs2k", sample, tmp_path / "out", ["patch=0"])
    (sample / "photo").rename(sample / "photos_elsewhere")
    with pytest.raises(UserError, match=r"no folder named photo under"):
        convert("fs2k", sample, tmp_path / "out")
