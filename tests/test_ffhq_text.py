import pickle

import pytest

from common.errors import UserError
from converters import convert
from converters.fixtures import ffhq_text as fixture

NAMES = fixture.SAMPLE_TRAIN + fixture.SAMPLE_TEST
FIRST_TEXT = "The young woman has long wavy blond hair and big blue eyes. She is smiling with her mouth slightly open."


def test_sample_rows_exact(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "ffhq")
    got = run_convert("ffhq_text", tmp_path / "ffhq")
    assert len(got.rows) == 8 * 9 and not got.rejects
    assert got.rows[0] == {
        "dataset": "ffhq_text",
        "image": "Image/00012.png",
        "image_id": "ffhq/00012",
        "box": None,
        "split": "train",
        "kind": "caption",
        "text": FIRST_TEXT,
        "attributes": None,
        "source": "Text/00012.txt:1",
        "person": None,
        "origin_id": None,
    }
    assert [r["text"] for r in got.rows] == [c for name in NAMES for c in fixture.captions_for(name)]
    # written as "  The teenage woman has  shoulder-length ...": stray spaces normalised
    assert got.rows[2]["text"] == (
        "The teenage woman has shoulder-length brown hair and narrow brown eyes. She wears red lipstick and earrings."
    )
    assert [r["source"] for r in got.rows[9:18]] == [f"Text/00037.txt:{i}" for i in range(1, 10)]  # a CRLF file
    assert [r["split"] for r in got.rows] == ["train"] * 45 + ["test"] * 27
    assert [r["image_id"] for r in got.rows[::9]] == [f"ffhq/{name}" for name in NAMES]
    assert got.summary["splits"] == {"train": 45, "val": 0, "test": 27}
    assert got.summary["expected"] == {"official": {"train": 4500, "test": 2340, "total": 6840}, "paper": 8000}
    assert got.summary["notes"] == []


def test_cub_layout_with_an_extra_level(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "readme")
    fixture.write_sample(tmp_path / "cub" / "FFHQ-Text", cub=True)
    readme = run_convert("ffhq_text", tmp_path / "readme")
    cub = run_convert("ffhq_text", tmp_path / "cub")

    def essence(rows):
        return [(r["text"], r["split"], r["image_id"]) for r in rows]

    assert essence(cub.rows) == essence(readme.rows)
    assert cub.rows[0]["image"] == "FFHQ-Text/image/00012.png"
    assert cub.rows[0]["source"] == "FFHQ-Text/text/00012.txt:1"


def test_python3_pickles_of_paths_and_other_image_extensions(tmp_path, run_convert):
    root = tmp_path / "ffhq"
    fixture.write_sample(root)
    for folder, names in (("Train", fixture.SAMPLE_TRAIN), ("Test", fixture.SAMPLE_TEST)):
        (root / folder / "filenames.pickle").write_bytes(pickle.dumps([f"Image/{n}.png" for n in names]))
    (root / "Image" / "00037.png").rename(root / "Image" / "00037.JPG")
    got = run_convert("ffhq_text", root)
    assert [r["split"] for r in got.rows] == ["train"] * 45 + ["test"] * 27
    assert got.rows[9]["image"] == "Image/00037.JPG"


def test_bad_records_are_rejected_with_reasons(tmp_path, run_convert):
    root = tmp_path / "ffhq"
    fixture.write_sample(root)
    text = root / "Text"
    (text / "70000.txt").write_text("Not an FFHQ image.\n")
    (text / "face.txt").write_text("No number.\n")
    (text / "00099.txt").write_text("In neither pickle.\n\n")
    (root / "Image" / "00099.png").write_bytes(b"")
    (text / "00158.txt").write_text("She has bangs.\n-\n")
    (root / "Image" / "01024.png").unlink()
    train = fixture.SAMPLE_TRAIN + ["../../../x", "face", "70000"]
    fixture.write_py2_pickle(root / "Train" / "filenames.pickle", train)
    got = run_convert("ffhq_text", root)
    assert got.reasons() == {
        "bad image name": ["Text/70000.txt:1", "Text/face.txt:1"],
        "empty caption": ["Text/00158.txt:2"],
        "image missing": [f"Text/01024.txt:{i}" for i in range(1, 10)],
        "no split": ["Text/00099.txt:1"],
    }
    details = {r["source"]: r["detail"] for r in got.rejects}
    assert details["Text/face.txt:1"] == "expected an FFHQ image number (0-69999), found face"
    assert details["Text/00099.txt:1"] == "not in the train or test list"
    assert [r["text"] for r in got.rows if r["image_id"] == "ffhq/00158"] == ["She has bangs."]
    assert len(got.rows) == 72 - 9 - 8
    assert all(".." not in r["image"] for r in got.rows)
    assert got.summary["notes"] == [
        "4 caption files in Text hold fewer than 9 captions (e.g. 00099.txt)",
        "1 names in the split lists have no caption file (e.g. 'x')",  # ../../../x: only its basename is used
    ]


def test_missing_annotation_files_are_clear_errors(tmp_path):
    root = tmp_path / "ffhq"
    fixture.write_sample(root)
    (root / "Train" / "filenames.pickle").unlink()
    with pytest.raises(UserError, match=r"ffhq_text: no train/filenames\.pickle .*under .*ffhq; expected the train"):
        convert("ffhq_text", root, tmp_path / "out")
    (root / "Text").rename(root / "descriptions")
    with pytest.raises(UserError, match=r"no folder named text or texts or captions under .*ffhq"):
        convert("ffhq_text", root, tmp_path / "out")
    assert not (tmp_path / "out" / "ffhq_text.parquet").exists()
