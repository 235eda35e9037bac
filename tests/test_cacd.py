import numpy as np
import pytest

from common.errors import UserError
from converters import convert
from converters.fixtures import cacd as fixture
from converters.fixtures import write_image

SPLIT_OF_RANK = {1: "val", 2: "val", 3: "test", 5: "test", 6: "train", 50: "train"}


def expected(records, key):
    if key == "text":
        return [f"cacd age: {r['age']}" for r in records]
    if key == "split":
        return [SPLIT_OF_RANK[r["rank"]] for r in records]
    if key == "image":
        return [f"CACD2000/{r['name']}" for r in records]
    return [f"cacd:{r['identity']}" for r in records]


def test_sample_rows_exact(tmp_path, run_convert):
    records = fixture.write_sample(tmp_path / "cacd")
    got = run_convert("cacd", tmp_path / "cacd")
    assert len(got.rows) == fixture.SAMPLE_RECORDS and not got.rejects
    assert got.rows[0] == {
        "dataset": "cacd",
        "image": "CACD2000/57_Robin_Williams_0001.jpg",
        "image_id": "cacd/57_Robin_Williams_0001",
        "box": None,
        "split": "val",
        "kind": "attributes",
        "text": "cacd age: 57",
        "attributes": [{"key": "age", "value": "57"}],
        "source": "celebrity2000_meta.mat:celebrityImageData(1)",
        "person": "cacd:1",
        "origin_id": None,
    }
    assert (
        [r["text"] for r in got.rows]
        == expected(records, "text")
        == [
            "cacd age: 57",
            "cacd age: 60",
            "cacd age: 40",
            "cacd age: 43",
            "cacd age: 50",
            "cacd age: 53",
            "cacd age: 36",
            "cacd age: 29",
            "cacd age: 33",
            "cacd age: 26",
            "cacd age: 23",
            "cacd age: 16",
        ]
    )
    assert [r["split"] for r in got.rows] == ["val"] * 4 + ["test"] * 4 + ["train"] * 4
    assert [r["person"] for r in got.rows] == expected(records, "person")
    assert [r["source"] for r in got.rows][-1] == "celebrity2000_meta.mat:celebrityImageData(12)"
    assert got.summary["splits"] == {"train": 4, "val": 4, "test": 4}
    assert got.summary["expected"] == {"official": {"total": 163446}, "paper": 163000}


def test_v73_file_alone_gives_the_same_rows(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "meta")
    fixture.write_sample(tmp_path / "v73", meta=False, v73=True)
    meta, v73 = run_convert("cacd", tmp_path / "meta"), run_convert("cacd", tmp_path / "v73")

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "source"} for r in rows]

    assert strip(v73.rows) == strip(meta.rows)
    assert v73.rows[3]["source"] == "celebrity2000.mat:celebrityImageData(4)"
    assert v73.summary["notes"] == ["read 12 entries of celebrityImageData from celebrity2000.mat (MATLAB v7.3 (HDF5))"]
    with open(tmp_path / "v73" / "celebrity2000.mat", "rb") as f:
        assert f.read(10) == b"MATLAB 7.3"  # the 512-byte MATLAB user block before the HDF5 data


def test_meta_file_is_preferred_when_both_exist(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "cacd", v73=True)
    got = run_convert("cacd", tmp_path / "cacd")
    assert {r["source"].split(":")[0] for r in got.rows} == {"celebrity2000_meta.mat"}


def test_extra_folder_levels_and_nested_image_folder(tmp_path, run_convert):
    records = fixture.write_sample(tmp_path / "cacd" / "CACD_download", nested=True)
    got = run_convert("cacd", tmp_path / "cacd")
    assert [r["image"] for r in got.rows] == [f"CACD_download/CACD2000/CACD2000/{r['name']}" for r in records]
    assert got.rows[0]["source"] == "CACD_download/celebrity2000_meta.mat:celebrityImageData(1)"
    assert got.rows[0]["image_id"] == "cacd/57_Robin_Williams_0001"  # ids do not depend on the layout


def bad_sample(root):
    """The sample with one bad entry of each kind (1-based positions in the struct given in comments)."""
    records = fixture.write_sample(root)
    cols = fixture.as_columns(records)
    cols["age"] = cols["age"].astype(float)
    cols["name"][1] = np.array([[5.0]])  # (2) a number where the file name should be
    cols["name"][2] = ""  # (3) empty name
    cols["age"][3] = np.nan  # (4)
    cols["age"][4] = 230  # (5)
    cols["rank"][6] = 0  # (7): ranks are 1-50
    cols["name"][8] = "../../x.jpg"  # (9)
    cols["name"][10] = cols["name"][0]  # (11) the same file again
    (root / "CACD2000" / records[11]["name"]).unlink()  # (12)
    return records, cols


def test_bad_entries_are_rejected_with_reasons(tmp_path, run_convert):
    root = tmp_path / "cacd"
    records, cols = bad_sample(root)
    fixture.write_meta(root / "celebrity2000_meta.mat", cols)
    got = run_convert("cacd", root)
    src = "celebrity2000_meta.mat:celebrityImageData({})".format
    assert got.reasons() == {
        "malformed record": [src(2)],
        "missing value": [src(3), src(4)],
        "unknown label value": [src(5), src(7)],
        "duplicate line": [src(11)],
        "path escapes root": [src(9)],
        "image missing": [src(12)],
    }
    details = {r["source"]: r["detail"] for r in got.rejects}
    assert details[src(5)] == "age=230" and details[src(7)] == "rank=0" and details[src(4)] == "age is NaN"
    assert details[src(12)] == f"CACD2000/{records[11]['name']}"
    kept = [0, 5, 7, 9]
    assert [r["text"] for r in got.rows] == [expected(records, "text")[i] for i in kept]
    assert [r["split"] for r in got.rows] == ["val", "test", "test", "train"]
    assert any("4 images in CACD2000/ are not named" in n for n in got.summary["notes"])


def test_bad_entries_in_v73_file(tmp_path, run_convert):
    root = tmp_path / "cacd"
    records, cols = bad_sample(root)
    (root / "celebrity2000_meta.mat").unlink()
    fixture.write_v73(root / "celebrity2000.mat", cols)
    got = run_convert("cacd", root)
    src = "celebrity2000.mat:celebrityImageData({})".format
    assert got.reasons() == {
        "malformed record": [src(2)],
        "missing value": [src(3), src(4)],
        "unknown label value": [src(5), src(7)],
        "duplicate line": [src(11)],
        "path escapes root": [src(9)],
        "image missing": [src(12)],
    }
    assert [r["text"] for r in got.rows] == [expected(records, "text")[i] for i in (0, 5, 7, 9)]


def test_name_age_mismatch_is_noted_not_rejected(tmp_path, run_convert):
    root = tmp_path / "cacd"
    records = fixture.write_sample(root)
    cols = fixture.as_columns(records)
    cols["age"][0] = 58  # the file name says 57
    fixture.write_meta(root / "celebrity2000_meta.mat", cols)
    write_image(root / "CACD2000" / "Thumbs.jpg", (8, 8))  # an unlisted image
    got = run_convert("cacd", root)
    assert got.rows[0]["text"] == "cacd age: 58" and not got.rejects
    assert "1 file names start with an age other than the age field (the field is used)" in got.summary["notes"]
    assert "1 images in CACD2000/ are not named in celebrityImageData (not converted)" in got.summary["notes"]


def test_missing_annotation_file_names_both(tmp_path):
    fixture.write_sample(tmp_path / "cacd", meta=False)
    with pytest.raises(UserError, match=r"no file named celebrity2000_meta.mat or celebrity2000.mat under .*cacd"):
        convert("cacd", tmp_path / "cacd", tmp_path / "out")
    assert not (tmp_path / "out" / "cacd.parquet").exists()


def test_missing_image_folder_is_a_clear_error(tmp_path):
    root = tmp_path / "cacd"
    fixture.write_meta(root / "celebrity2000_meta.mat", fixture.as_columns(fixture.sample_records()))
    with pytest.raises(UserError, match=r"no folder named CACD2000"):
        convert("cacd", root, tmp_path / "out")


def test_struct_without_a_needed_field_names_file_and_field(tmp_path):
    root = tmp_path / "cacd"
    fixture.write_sample(root)
    cols = fixture.as_columns(fixture.sample_records())
    fixture.write_meta(root / "celebrity2000_meta.mat", cols, fields=("age", "identity", "year", "name"))
    with pytest.raises(
        UserError,
        match=r"celebrity2000_meta.mat: struct celebrityImageData has no field 'rank' "
        r"\(fields: age, identity, year, name\)",
    ):
        convert("cacd", root, tmp_path / "out")


def test_fields_of_different_length_are_a_user_error(tmp_path):
    import scipy.io

    root = tmp_path / "cacd"
    fixture.write_sample(root)
    cols = {k: v.reshape(-1, 1) for k, v in fixture.as_columns(fixture.sample_records()).items()}
    cols["rank"] = cols["rank"][:-1]
    scipy.io.savemat(root / "celebrity2000_meta.mat", {"celebrityImageData": cols})
    with pytest.raises(UserError, match=r"_meta.mat: fields of celebrityImageData differ in length .*rank 11"):
        convert("cacd", root, tmp_path / "out")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a mat file at all" * 10, r"celebrity2000_meta.mat: not a readable MATLAB .mat file"),
        (None, r"celebrity2000_meta.mat: expected a struct variable 'celebrityImageData', found variables: something"),
    ],
)
def test_unreadable_or_wrong_mat_file(tmp_path, content, message):
    import scipy.io

    root = tmp_path / "cacd"
    fixture.write_sample(root)
    path = root / "celebrity2000_meta.mat"
    if content is None:
        scipy.io.savemat(path, {"something": np.zeros((2, 1))})
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        convert("cacd", root, tmp_path / "out")


def test_full_size_writer_shape(tmp_path, run_convert):
    fixture.write_full_size(tmp_path / "cacd", n=400)
    got = run_convert("cacd", tmp_path / "cacd")
    assert len(got.rows) == 400 and not got.rejects
    assert got.summary["splits"]["val"] > 0 and got.summary["splits"]["test"] > 0
    parsed = fixture.baseline_parse(tmp_path / "cacd")
    assert parsed["celebrityImageData"][0, 0]["name"].shape == (400, 1)
