import pickle

import pytest

from common.errors import UserError
from converters import convert
from converters.fixtures import mm_celeba_hq as fixture

SAMPLE = fixture.SAMPLE_INDICES
NO_MAPPING = (
    "origin_id is null: no CelebA-HQ-to-CelebA-mapping.txt found (pass mapping=PATH from CelebAMask-HQ "
    "to link these faces to CelebA)"
)
FIRST_TEXT = (
    "The man has high cheekbones and arched eyebrows. He has straight hair which is black in colour. He is young."
)


def expected_texts(indices=SAMPLE):
    return [c for k in indices for c in fixture.captions_for(k)]


def test_sample_rows_exact(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "mm")
    got = run_convert("mm_celeba_hq", tmp_path / "mm")
    assert len(got.rows) == 120 and not got.rejects
    assert got.rows[0] == {
        "dataset": "mm_celeba_hq",
        "image": "image/0.jpg",
        "image_id": "celeba_hq/0",
        "box": None,
        "split": "train",
        "kind": "caption",
        "text": FIRST_TEXT,
        "attributes": None,
        "source": "text/0.txt:1",
        "person": None,
        "origin_id": None,
    }
    assert [r["text"] for r in got.rows] == expected_texts()
    assert got.rows[33]["text"] == fixture.captions_for(3)[3]  # trailing spaces trimmed
    assert [r["source"] for r in got.rows[:11]] == [f"text/0.txt:{i}" for i in range(1, 11)] + ["text/1.txt:1"]
    assert [r["split"] for r in got.rows] == ["train"] * 80 + ["test"] * 40
    assert {r["image_id"] for r in got.rows[80:]} == {f"celeba_hq/{k}" for k in (24000, 24001, 29998, 29999)}
    assert got.summary["splits"] == {"train": 80, "val": 0, "test": 40}
    assert got.summary["images"] == 12
    assert got.summary["expected"] == {"official": {"train": 240000, "test": 60000, "total": 300000}, "paper": 300000}
    assert got.summary["notes"] == [NO_MAPPING]


def test_swapped_pickles_are_corrected_and_noted(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "normal")
    fixture.write_sample(tmp_path / "swapped", swapped=True)
    normal = run_convert("mm_celeba_hq", tmp_path / "normal")
    swapped = run_convert("mm_celeba_hq", tmp_path / "swapped")
    assert swapped.rows == normal.rows
    assert swapped.summary["notes"] == [
        NO_MAPPING,
        (
            "the split pickles are swapped (train/filenames.pickle holds 4 names, mostly indices >= 24000): corrected, "
            "train = indices < 24000"
        ),
    ]
    assert not any("swapped" in note for note in normal.summary["notes"])


def test_pickles_off_the_official_rule_are_kept_and_noted(tmp_path, run_convert):
    root = tmp_path / "mm"
    fixture.write_sample(root)
    with open(root / "test" / "filenames.pickle", "wb") as f:
        pickle.dump(["7", "24000", "24001", "29998", "29999"], f, protocol=2)
    with open(root / "train" / "filenames.pickle", "wb") as f:
        pickle.dump([str(k) for k in range(7)], f, protocol=2)
    got = run_convert("mm_celeba_hq", root)
    assert {r["split"] for r in got.rows if r["image_id"] == "celeba_hq/7"} == {"test"}
    assert (
        "the split pickles do not follow the official rule (train < 24000 <= test) for every name; kept as released"
        in got.summary["notes"]
    )


def test_drive_layout_with_extra_levels(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "flat")
    fixture.write_sample(tmp_path / "drive" / "MM-CelebA-HQ", nested=True)
    flat = run_convert("mm_celeba_hq", tmp_path / "flat")
    drive = run_convert("mm_celeba_hq", tmp_path / "drive")
    assert [r["text"] for r in drive.rows] == [r["text"] for r in flat.rows]
    assert drive.rows[0]["image"] == "MM-CelebA-HQ/image/images/0.jpg"
    assert drive.rows[0]["source"] == "MM-CelebA-HQ/text/celeba-caption/0.txt:1"


def test_mapping_fills_origin_id(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "mm")
    mapping = tmp_path / "CelebAMask-HQ" / "CelebA-HQ-to-CelebA-mapping.txt"
    fixture.write_mapping(mapping, SAMPLE)
    got = run_convert("mm_celeba_hq", tmp_path / "mm", f"mapping={mapping}")
    assert got.rows[0]["origin_id"] == "celeba/100001"
    assert got.rows[-1]["origin_id"] == f"celeba/{100001 + 7 * 29999:06d}"
    assert got.summary["notes"] == [f"origin_id from {mapping}"]
    fixture.write_mapping(tmp_path / "mm" / "CelebA-HQ-to-CelebA-mapping.txt", SAMPLE)  # found under the root too
    assert run_convert("mm_celeba_hq", tmp_path / "mm").rows[0]["origin_id"] == "celeba/100001"


def test_bad_records_are_rejected_with_reasons(tmp_path, run_convert):
    root = tmp_path / "mm"
    fixture.write_sample(root)
    (root / "text" / "abc.txt").write_text("A caption for no known face.\n")
    (root / "text" / "30000.txt").write_text("Beyond CelebA-HQ.\n")
    (root / "text" / "100.txt").write_text("In no split list.\n")
    (root / "image" / "100.jpg").write_bytes(b"")
    (root / "text" / "1.txt").write_text("The woman is smiling.\n.\n\n")
    (root / "image" / "2.jpg").unlink()
    with open(root / "train" / "filenames.pickle", "wb") as f:  # 3 in both lists; a name that would escape the root
        pickle.dump(["0", "1", "2", "3", "4", "5", "6", "7", "../../../etc/passwd"], f, protocol=2)
    with open(root / "test" / "filenames.pickle", "wb") as f:
        pickle.dump(["3", "24000", "24001", "29998", "29999", "abc", "30000"], f, protocol=2)
    got = run_convert("mm_celeba_hq", root)
    reasons = got.reasons()
    assert reasons == {
        "bad image name": ["text/30000.txt:1", "text/abc.txt:1"],
        "empty caption": ["text/1.txt:2"],
        "image missing": [f"text/2.txt:{i}" for i in range(1, 11)],
        "no split": [f"text/3.txt:{i}" for i in range(1, 11)] + ["text/100.txt:1"],
    }
    details = {r["source"]: r["detail"] for r in got.rejects}
    assert details["text/abc.txt:1"] == "expected a CelebA-HQ index (0-29999), found abc"
    assert details["text/3.txt:1"] == "in both the train or test lists"
    assert details["text/100.txt:1"] == "not in the train or test list"
    assert details["text/2.txt:1"] == "image/2.jpg"
    assert [r["text"] for r in got.rows if r["image_id"] == "celeba_hq/1"] == ["The woman is smiling."]
    assert len(got.rows) == 120 - 10 - 10 - 9  # 1.txt now holds one caption
    assert all(".." not in r["image"] for r in got.rows)
    assert "1 names in the split lists have no caption file (e.g. 'passwd')" in got.summary["notes"]


def test_missing_or_broken_annotation_files_are_clear_errors(tmp_path):
    root = tmp_path / "mm"
    fixture.write_sample(root)
    (root / "test" / "filenames.pickle").unlink()
    with pytest.raises(UserError, match=r"mm_celeba_hq: no test/filenames\.pickle .* under .*mm; expected the test"):
        convert("mm_celeba_hq", root, tmp_path / "out")
    (root / "test" / "filenames.pickle").write_bytes(b"this is not a pickle")
    with pytest.raises(UserError, match=r"test/filenames\.pickle: .*pickle"):
        convert("mm_celeba_hq", root, tmp_path / "out")
    (root / "text").rename(root / "captions_elsewhere")
    with pytest.raises(UserError, match=r"no folder named celeba-caption or text under .*mm"):
        convert("mm_celeba_hq", root, tmp_path / "out")
    with pytest.raises(UserError, match=r"option mapping=.*nowhere\.txt: no such file"):
        convert("mm_celeba_hq", root, tmp_path / "out", [f"mapping={tmp_path / 'nowhere.txt'}"])
    assert not (tmp_path / "out" / "mm_celeba_hq.parquet").exists()
