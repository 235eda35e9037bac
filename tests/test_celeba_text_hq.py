import pytest

from common.errors import UserError
from converters import convert
from converters.fixtures import celeba_text_hq as fixture

SAMPLE = fixture.SAMPLE_TRAIN + fixture.SAMPLE_TEST
FIRST_TEXT = "This young lady has short brown hair, an oval face and high cheekbones."


def expected_texts() -> list[str]:
    texts = []
    for k in SAMPLE:
        lines = [fixture.caption(k, j) for j in range(7 if k == fixture.SHORT_FILE else 10)]
        if k == fixture.FFFD_FILE:
            lines[1] = lines[1].replace(", ", " ", 1)
        if k == fixture.GBK_FILE:
            lines[4] = lines[4].replace(", ", " ", 1)
        texts += lines
    return texts


def test_sample_rows_exact(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "cthq")
    got = run_convert("celeba_text_hq", tmp_path / "cthq")
    assert len(got.rows) == 97 and not got.rejects  # 9 files of 10 captions, one of 7
    assert got.rows[0] == {
        "dataset": "celeba_text_hq",
        "image": "CelebAimg/2.jpg",
        "image_id": "celeba_hq/2",
        "box": None,
        "split": "train",
        "kind": "caption",
        "text": FIRST_TEXT,
        "attributes": None,
        "source": "captions/2.txt:1",
        "person": None,
        "origin_id": None,
    }
    by_source = {r["source"]: r["text"] for r in got.rows}
    assert by_source["captions/8.txt:2"] == "The man has short brown hair a big nose and thick lips."  # U+FFFD U+FFFD
    assert by_source["captions/13.txt:5"] == "The man has curly blond hair thin eyebrows and a small nose."  # GBK bytes
    assert by_source["captions/21.txt:10"] == "This young lady has no hair, thin eyebrows and a small nose."  # CRLF
    assert [r["text"] for r in got.rows] == expected_texts()
    assert [r["split"] for r in got.rows] == ["train"] * 77 + ["test"] * 20
    assert [r["image_id"] for r in got.rows[::10]][:2] == ["celeba_hq/2", "celeba_hq/5"]
    assert got.summary["splits"] == {"train": 77, "val": 0, "test": 20}
    assert got.summary["expected"]["paper"] == 150000
    assert got.summary["notes"] == [
        (
            "origin_id is null: no CelebA-HQ-to-CelebA-mapping.txt found (pass mapping=PATH from CelebAMask-HQ to link "
            "these faces to CelebA)"
        ),
        "1 caption files in captions hold fewer than 10 captions (e.g. 5.txt)",
    ]


def test_images_outside_the_root_share_its_common_parent(tmp_path, run_convert):
    images = fixture.write_celebamask_hq(tmp_path / "data" / "CelebAMask-HQ", SAMPLE)
    fixture.write_sample(tmp_path / "data" / "CelebAText-HQ", images=images)
    got = run_convert("celeba_text_hq", tmp_path / "data" / "CelebAText-HQ", f"images={images}")
    assert got.summary["root"] == str(tmp_path / "data")
    row = got.rows[0]
    assert (row["image"], row["source"], row["origin_id"]) == (
        "CelebAMask-HQ/CelebA-HQ-img/2.jpg",
        "CelebAText-HQ/captions/2.txt:1",
        "celeba/100015",
    )
    assert (tmp_path / "data" / row["image"]).is_file()
    assert [r["text"] for r in got.rows] == expected_texts()
    data = tmp_path / "data"
    assert got.summary["notes"][0] == (
        f"the images lie outside the dataset folder {data / 'CelebAText-HQ'}: "
        f"image and source paths are relative to their common parent {data}"
    )
    assert got.summary["notes"][-1] == f"origin_id from {images.parent / 'CelebA-HQ-to-CelebA-mapping.txt'}"


def test_celebamask_hq_inside_the_root_is_found(tmp_path, run_convert):
    root = tmp_path / "cthq"
    images = fixture.write_celebamask_hq(root / "CelebAMask-HQ", SAMPLE)
    fixture.write_sample(root, images=images)
    got = run_convert("celeba_text_hq", root)
    assert got.summary["root"] == str(root)
    last = got.rows[-1]
    assert (last["image"], last["origin_id"]) == ("CelebAMask-HQ/CelebA-HQ-img/233.jpg", "celeba/101632")


def test_missing_images_or_annotations_are_clear_errors(tmp_path):
    root = tmp_path / "cthq"
    fixture.write_sample(root, images=tmp_path / "elsewhere")
    with pytest.raises(UserError, match=r"no folder named CelebA-HQ-img or CelebAimg under .*cthq; .*pass images=PATH"):
        convert("celeba_text_hq", root, tmp_path / "out")
    with pytest.raises(UserError, match=r"option images=.*nowhere: no such folder"):
        convert("celeba_text_hq", root, tmp_path / "out", [f"images={tmp_path / 'nowhere'}"])
    (root / "data_flist" / "test.flist").unlink()
    with pytest.raises(UserError, match=r"no file named test\.flist under .*cthq"):
        convert("celeba_text_hq", root, tmp_path / "out", [f"images={tmp_path / 'elsewhere'}"])
    (root / "captions").rename(root / "descriptions")
    with pytest.raises(UserError, match=r"no folder named captions or caption or text under .*cthq"):
        convert("celeba_text_hq", root, tmp_path / "out", [f"images={tmp_path / 'elsewhere'}"])
    assert not (tmp_path / "out" / "celeba_text_hq.parquet").exists()


def test_bad_records_are_rejected_with_reasons(tmp_path, run_convert):
    root = tmp_path / "cthq"
    fixture.write_sample(root)
    captions = root / "captions"
    (captions / "2.txt").write_bytes(b"A woman with bangs.\n\xc4\xe3\xba\xc3\xca\xc0\xbd\xe7\n...\n")
    (captions / "7.txt").write_text("In no list.\n")
    (captions / "40000.txt").write_text("Beyond CelebA-HQ.\n")
    (root / "CelebAimg" / "7.jpg").write_bytes(b"")
    (root / "CelebAimg" / "34.jpg").unlink()
    with open(root / "data_flist" / "train.flist", "a") as f:
        f.write("../../../etc/x.jpg\n\n./data/CelebAimg/144.jpg\n./data/CelebAimg/40000.jpg\n")
    got = run_convert("celeba_text_hq", root)
    assert got.reasons() == {
        "undecodable text": ["captions/2.txt:2"],
        "empty caption": ["captions/2.txt:3"],
        "bad image name": ["captions/40000.txt:1"],
        "no split": ["captions/7.txt:1"] + [f"captions/144.txt:{i}" for i in range(1, 11)],
        "image missing": [f"captions/34.txt:{i}" for i in range(1, 11)],
    }
    details = {r["source"]: r["detail"] for r in got.rejects}
    assert details["captions/144.txt:1"] == "in both the train or test lists"
    assert details["captions/2.txt:2"] == "more U+FFFD than letters"
    assert [r["text"] for r in got.rows if r["image_id"] == "celeba_hq/2"] == ["A woman with bangs."]
    assert len(got.rows) == 97 - 9 - 10 - 10
    assert all(".." not in r["image"] for r in got.rows)
    assert "1 names in the split lists have no caption file (e.g. 'x')" in got.summary["notes"]


def test_a_symlinked_image_folder_stays_under_the_root(tmp_path, run_convert):
    images = fixture.write_celebamask_hq(tmp_path / "CelebAMask-HQ", SAMPLE)
    root = tmp_path / "cthq"
    fixture.write_sample(root, images=tmp_path / "unused")
    (root / "CelebAimg").symlink_to(images)
    got = run_convert("celeba_text_hq", root)
    assert got.summary["root"] == str(root)
    assert got.rows[0]["image"] == "CelebAimg/2.jpg"
    assert got.rows[0]["origin_id"] is None  # the mapping beside the link's target is not searched
