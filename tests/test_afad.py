import pytest

from common.errors import UserError
from converters import convert
from converters.fixtures import afad as fixture
from converters.fixtures import write_image

FULL_TEXTS = [
    "afad age: 15; gender: male",
    "afad age: 15; gender: male",
    "afad age: 15; gender: female",
    "afad age: 16; gender: male",
    "afad age: 22; gender: male",
    "afad age: 22; gender: female",
    "afad age: 22; gender: female",
    "afad age: 38; gender: male",
    "afad age: 38; gender: female",
    "afad age: 72; gender: female",
]
FULL_SPLITS = ["train"] * 5 + ["val", "val", "test", "train", "train"]  # by person: 100062 val, 100033 test


def test_sample_rows_exact(tmp_path, run_convert):
    paths = fixture.write_sample(tmp_path / "afad")
    got = run_convert("afad", tmp_path / "afad")
    assert len(got.rows) == len(fixture.SAMPLE_IMAGES) and not got.rejects
    assert got.rows[0] == {
        "dataset": "afad",
        "image": "AFAD-Full/15/111/292943-1.jpg",
        "image_id": "afad/15/111/292943-1",
        "box": None,
        "split": "train",
        "kind": "attributes",
        "text": "afad age: 15; gender: male",
        "attributes": [{"key": "age", "value": "15"}, {"key": "gender", "value": "male"}],
        "source": "AFAD-Full/AFAD-Full.txt:10",
        "person": "afad:292943",
        "origin_id": None,
    }
    assert [r["text"] for r in got.rows] == FULL_TEXTS
    assert [r["split"] for r in got.rows] == FULL_SPLITS
    assert [r["image"] for r in got.rows] == [f"AFAD-Full/{p}" for p in paths]
    assert [r["source"] for r in got.rows] == [f"AFAD-Full/AFAD-Full.txt:{10 - i}" for i in range(10)]  # reversed list
    assert [r["person"] for r in got.rows][3] == "afad:292943"  # same person at age 16: same split
    assert got.summary["notes"] == [
        "walked AFAD-Full: 10 images in 8 <age>/<gender> folders",
        "skipped 10 files that are not images (Thumbs.db 8, AFAD-Full.txt 1, README.md 1)",
    ]
    assert got.summary["splits"] == {"train": 7, "val": 2, "test": 1}
    assert got.summary["expected"] == {"official": {"total": 164432}, "paper": 160000}


def test_lite_alone_is_converted(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "afad", variant="lite")
    got = run_convert("afad", tmp_path / "afad")
    assert [r["image"] for r in got.rows] == [
        "AFAD-Lite/22/111/638379-0.jpg",
        "AFAD-Lite/22/112/100062-0.jpg",
        "AFAD-Lite/22/112/100062-3.jpg",
        "AFAD-Lite/38/111/100033-0.jpg",
        "AFAD-Lite/38/112/47520-1.jpg",
    ]
    assert [r["text"] for r in got.rows] == FULL_TEXTS[4:9]
    assert got.rows[1]["image_id"] == "afad/22/112/100062-0"  # the same id as the picture in AFAD-Full
    assert got.rows[0]["source"] == "AFAD-Lite/AFAD-Lite.txt:5"
    assert "AFAD-Lite is expected to hold 59344 images" in got.summary["notes"]


def test_full_is_the_default_when_both_are_present_and_lite_an_option(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "afad", variant="both")
    full = run_convert("afad", tmp_path / "afad")
    lite = run_convert("afad", tmp_path / "afad", "variant=lite")
    assert len(full.rows) == 10 and full.rows[0]["image"].startswith("AFAD-Full/")
    assert "AFAD-Lite is also present and was not converted (option variant=lite)" in full.summary["notes"]
    assert len(lite.rows) == 5 and {r["image"].split("/")[0] for r in lite.rows} == {"AFAD-Lite"}
    assert lite.summary["options"] == {"variant": "lite"}


def test_asking_for_an_absent_variant_or_a_bad_one_is_a_user_error(tmp_path):
    fixture.write_sample(tmp_path / "afad")
    with pytest.raises(UserError, match=r"no folder named AFAD-Lite under .*afad \(found: AFAD-Full\)"):
        convert("afad", tmp_path / "afad", tmp_path / "out", ["variant=lite"])
    with pytest.raises(UserError, match=r"option variant='medium'; expected one of auto, full, lite"):
        convert("afad", tmp_path / "afad", tmp_path / "out", ["variant=medium"])


def test_no_afad_folder_is_a_clear_error(tmp_path):
    (tmp_path / "afad" / "downloads").mkdir(parents=True)
    with pytest.raises(UserError, match=r"no folder named AFAD-Full or AFAD-Lite under .*afad \(found: neither\)"):
        convert("afad", tmp_path / "afad", tmp_path / "out")
    assert not (tmp_path / "out" / "afad.parquet").exists()


def test_without_the_list_the_folders_are_the_records(tmp_path, run_convert):
    paths = fixture.write_sample(tmp_path / "afad", list_file=False)
    got = run_convert("afad", tmp_path / "afad")
    assert [r["text"] for r in got.rows] == FULL_TEXTS and [r["split"] for r in got.rows] == FULL_SPLITS
    assert [r["source"] for r in got.rows] == [f"AFAD-Full/{p}" for p in paths]
    assert "no AFAD-Full.txt found: the images on disk are all the records" in got.summary["notes"]


LAYOUTS = ["list beside folder", "extra levels", "nested twice", "root is the folder", "lower case"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_variants(tmp_path, run_convert, layout):
    root = tmp_path / "afad"
    base = root / "x" / "y" if layout == "extra levels" else root
    fixture.write_sample(base)
    folder = base / "AFAD-Full"
    prefix = "x/y/AFAD-Full/" if layout == "extra levels" else "AFAD-Full/"
    if layout == "list beside folder":
        (folder / "AFAD-Full.txt").rename(base / "AFAD-Full.txt")
    elif layout == "nested twice":
        folder.rename(base / "tmp")
        folder.mkdir()
        (base / "tmp").rename(folder / "AFAD-Full")
        prefix = "AFAD-Full/AFAD-Full/"
    elif layout == "root is the folder":
        root, prefix = folder, ""
    elif layout == "lower case":
        (folder / "AFAD-Full.txt").rename(folder / "afad-full.TXT")
        folder.rename(base / "afad-full")
        prefix = "afad-full/"
    got = run_convert("afad", root)
    assert [r["text"] for r in got.rows] == FULL_TEXTS and not got.rejects
    assert got.rows[0]["image"] == prefix + "15/111/292943-1.jpg"
    assert got.rows[0]["image_id"] == "afad/15/111/292943-1"
    assert got.rows[0]["source"].endswith(".txt:10") or got.rows[0]["source"].endswith(".TXT:10")
    assert ("--root itself holds the <age> folders" in got.summary["notes"]) == (layout == "root is the folder")


def test_bad_entries_are_rejected_or_noted(tmp_path, run_convert):
    root = tmp_path / "afad"
    fixture.write_sample(root)
    folder = root / "AFAD-Full"
    listing = folder / "AFAD-Full.txt"
    lines = listing.read_text().splitlines()
    lines += [
        "./15/111/292943-1.jpg",  # 11: duplicate of line 10
        "./15/111/999999-0.jpg",  # 12: listed, not on disk
        "./../../etc/passwd.jpg",  # 13: escapes the root
        "./15/292943-9.jpg",  # 14: not <age>/<gender>/<file>
        "./15/111/a b.jpg",  # 15: two fields
        "",  # blank: not a record
    ]
    listing.write_text("\n".join(lines) + "\n")
    write_image(folder / "22" / "113" / "5555-0.jpg", fixture.IMAGE_SIZE)  # unknown gender code, unlisted
    write_image(folder / "22" / "111" / "777-1.jpg", fixture.IMAGE_SIZE)  # on disk, not listed: kept
    write_image(folder / "__MACOSX" / "111" / "1-0.jpg", fixture.IMAGE_SIZE)  # not an age: skipped
    write_image(folder / "22" / "misc" / "2-0.jpg", fixture.IMAGE_SIZE)  # not a gender code: skipped
    (folder / "38" / "112" / ".DS_Store").write_bytes(b"\0")
    (folder / "72" / "112" / "333-0.jpg").unlink()  # listed on line 1, gone
    got = run_convert("afad", root)
    src = "AFAD-Full/AFAD-Full.txt:{}".format
    assert got.reasons() == {
        "malformed line": [src(15), src(14)],
        "duplicate line": [src(11)],
        "path escapes root": [src(13)],
        "image missing": [src(1), src(12)],
        "unknown label value": ["AFAD-Full/22/113/5555-0.jpg"],
    }
    details = {r["source"]: r["detail"] for r in got.rejects}
    assert details[src(1)] == "AFAD-Full/72/112/333-0.jpg"
    assert details["AFAD-Full/22/113/5555-0.jpg"] == "gender='113'"
    assert details[src(14)] == "expected ./<age>/<gender>/<file>"
    assert [r["text"] for r in got.rows] == FULL_TEXTS[:5] + ["afad age: 22; gender: male"] + FULL_TEXTS[5:9]
    kept = got.rows[5]
    assert kept["image"] == kept["source"] == "AFAD-Full/22/111/777-1.jpg" and kept["person"] == "afad:777"
    notes = got.summary["notes"]
    assert "walked AFAD-Full: 11 images in 9 <age>/<gender> folders" in notes
    assert "skipped 11 files that are not images (Thumbs.db 8, .DS_Store 1, AFAD-Full.txt 1, README.md 1)" in notes
    assert "skipped 2 folders that are not numbers (AFAD-Full/22/misc, AFAD-Full/__MACOSX)" in notes
    assert "2 images on disk are not listed in AFAD-Full/AFAD-Full.txt (kept)" in notes


def test_zero_padded_age_folder_keeps_its_path(tmp_path, run_convert):
    root = tmp_path / "afad"
    fixture.write_sample(root, list_file=False)
    (root / "AFAD-Full" / "16").rename(root / "AFAD-Full" / "016")
    got = run_convert("afad", root)
    row = next(r for r in got.rows if r["image"] == "AFAD-Full/016/111/292943-3.jpg")
    assert row["text"] == "afad age: 16; gender: male" and row["image_id"] == "afad/016/111/292943-3"


def test_person_unknown_when_the_name_has_no_person_id(tmp_path, run_convert):
    root = tmp_path / "afad"
    fixture.write_sample(root, list_file=False)
    write_image(root / "AFAD-Full" / "15" / "111" / "scan0001.jpg", fixture.IMAGE_SIZE)
    got = run_convert("afad", root)
    odd = next(r for r in got.rows if r["image"].endswith("scan0001.jpg"))
    assert odd["person"] is None and odd["image_id"] == "afad/15/111/scan0001"
    assert odd["split"] in ("train", "val", "test")  # keyed by image_id instead


def test_full_size_writer_shape(tmp_path, run_convert):
    fixture.write_full_size(tmp_path / "afad", n=500)
    got = run_convert("afad", tmp_path / "afad")
    assert len(got.rows) == 500 and not got.rejects
    assert len(fixture.baseline_parse(tmp_path / "afad")) == 500
    assert got.summary["splits"]["train"] > 400
