import json
import shutil

import pytest

from common.errors import UserError
from converters import convert
from converters.fixtures import celeba_dialog as fixture

NAMES = [f"{i:06d}.jpg" for i in range(1, 13)]
# The degree words, spelled out here so that a wrong manifest or a shifted code table fails the test.
WORDS = {
    "bangs": ["none", "very short", "short", "medium", "long", "extremely long"],
    "eyeglasses": [
        "none",
        "rimless eyeglasses",
        "thin-frame eyeglasses",
        "thick-frame eyeglasses",
        "thin-frame sunglasses",
        "thick-frame sunglasses",
    ],
    "no beard": ["clean shaven", "stubble", "short beard", "medium beard", "bushy beard", "full beard"],
    "smiling": ["not smiling", "slight smile", "smile showing teeth", "beaming smile", "big smile", "laughing"],
    "young": ["child", "teenager", "young adult", "middle-aged", "elderly", "very old"],
}


def attributes_text(name: str) -> str:
    pairs = [f"{key}: {WORDS[key][d]}" for key, d in zip(WORDS, fixture.degrees_for(name))]
    return "celeba_dialog " + "; ".join(pairs)


def captions(got, kind="caption"):
    return [r for r in got.rows if r["kind"] == kind]


def test_sample_rows_exact(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "dialog")
    got = run_convert("celeba_dialog", tmp_path / "dialog")
    assert not got.rejects and len(got.rows) == 24
    assert got.rows[0] == {
        "dataset": "celeba_dialog",
        "image": "img_align_celeba/000001.jpg",
        "image_id": "celeba/000001",
        "box": None,
        "split": "train",
        "kind": "caption",
        "text": "The celebrity smiles broadly showing some teeth. The celebrity has extremely long bangs. "
        "The celebrity wears thin-framed sunglasses. The celebrity has a bushy beard. The celebrity looks elderly.",
        "attributes": None,
        "source": "text/captions.json:000001.jpg",
        "person": None,
        "origin_id": None,
    }
    assert got.rows[12] == {
        "dataset": "celeba_dialog",
        "image": "img_align_celeba/000001.jpg",
        "image_id": "celeba/000001",
        "box": None,
        "split": "train",
        "kind": "attributes",
        "text": "celeba_dialog bangs: extremely long; eyeglasses: thin-frame sunglasses; no beard: bushy beard; "
        "smiling: smile showing teeth; young: elderly",
        "attributes": [
            {"key": "bangs", "value": "extremely long"},
            {"key": "eyeglasses", "value": "thin-frame sunglasses"},
            {"key": "no beard", "value": "bushy beard"},
            {"key": "smiling", "value": "smile showing teeth"},
            {"key": "young", "value": "elderly"},
        ],
        "source": "combined_annotation.txt:2",
        "person": None,
        "origin_id": None,
    }
    # caption 000002 has runs of spaces, leading spaces and a trailing newline in the file: normalised
    assert [r["text"] for r in captions(got)] == [fixture.entry(n)["overall_caption"] for n in NAMES]
    assert [r["text"] for r in captions(got, "attributes")] == [attributes_text(n) for n in NAMES]
    assert [r["split"] for r in captions(got)] == ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    assert got.summary["splits"] == {"train": 16, "val": 4, "test": 4}
    assert got.summary["expected"]["official"]["total"] == 202599 and got.summary["expected"]["paper"] == 203000
    assert "2 of 60 attribute-wise captions are empty or null (skipped, not pairs)" in got.summary["notes"]


def test_attribute_captions_flag_adds_non_empty_ones(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "dialog")
    got = run_convert("celeba_dialog", tmp_path / "dialog", "attribute_captions=true")
    extra = [r for r in captions(got) if r["source"].count(":") == 2]
    assert len(extra) == 60 - 2 and got.summary["records_in"] == 12 + 58 + 12
    assert "text/captions.json:000004.jpg:Bangs" not in {r["source"] for r in extra}  # "" in the file
    assert "text/captions.json:000007.jpg:Eyeglasses" not in {r["source"] for r in extra}  # null in the file
    first = next(r for r in extra if r["source"] == "text/captions.json:000001.jpg:Smiling")
    assert first["text"] == "The celebrity smiles broadly showing some teeth." and first["image_id"] == "celeba/000001"


def test_hq_version_with_mapping_partition_and_missing_caption(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "hq", version="hq")
    got = run_convert("celeba_dialog", tmp_path / "hq", "version=hq")
    assert got.rows[0] == {
        "dataset": "celeba_dialog",
        "image": "image/0.jpg",
        "image_id": "celeba_hq/0",
        "box": None,
        "split": "train",
        "kind": "caption",
        "text": fixture.entry("0.jpg")["overall_caption"],
        "attributes": None,
        "source": "text/captions_hq.json:0.jpg",
        "person": None,
        "origin_id": "celeba/119614",
    }
    caps, attrs = captions(got), captions(got, "attributes")
    assert [r["image_id"] for r in caps] == [
        "celeba_hq/0",
        "celeba_hq/1",
        "celeba_hq/2",
        "celeba_hq/3",
        "celeba_hq/5381",
    ]
    assert [r["split"] for r in caps] == ["train", "train", "test", "train", "test"]
    # 5380.jpg has no caption, but its labels come from the label table (not CelebAMask-HQ's 40-attribute file)
    assert [(r["image_id"], r["origin_id"], r["split"]) for r in attrs][4] == ("celeba_hq/5380", "celeba/170001", "val")
    assert attrs[4]["text"] == attributes_text("5380.jpg")
    assert attrs[0]["source"] == "classification_label/fine_grained_attribute_hq.txt:3"  # after the count line
    assert "images in image without a caption entry: 1 (5380.jpg)" in got.summary["notes"]
    assert got.summary["expected"]["official"] == {"total": 30000}


def test_hq_without_mapping_has_no_origin_and_a_hash_split(tmp_path, run_convert):
    root = tmp_path / "hq"
    fixture.write_sample(root, version="hq")
    (root / "CelebA-HQ-to-CelebA-mapping.txt").unlink()
    got = run_convert("celeba_dialog", root, "version=hq")
    assert len(got.rows) == 5 + 6 and not got.rejects
    assert {r["origin_id"] for r in got.rows} == {None}
    assert any("HQ faces need the CelebA-HQ mapping" in n for n in got.summary["notes"])
    assert "no CelebA-HQ-to-CelebA-mapping.txt (pass mapping=PATH): origin_id is empty" in got.summary["notes"]


def test_files_found_by_content_under_other_names_and_levels(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "plain")
    base = run_convert("celeba_dialog", tmp_path / "plain")
    root = tmp_path / "nested"
    fixture.write_sample(root / "CelebA-Dialog")
    (root / "CelebA-Dialog" / "text" / "captions.json").rename(root / "CelebA-Dialog" / "text" / "Image_Caption.JSON")
    (root / "CelebA-Dialog" / "combined_annotation.txt").rename(root / "CelebA-Dialog" / "fine_grained.txt")
    (root / "CelebA-Dialog" / "text" / "requests.json").write_text(json.dumps({"000001.jpg": {"request": "x"}}))
    got = run_convert("celeba_dialog", root)
    assert [r["text"] for r in got.rows] == [r["text"] for r in base.rows]
    assert got.rows[0]["source"] == "CelebA-Dialog/text/Image_Caption.JSON:000001.jpg"
    assert got.rows[12]["source"] == "CelebA-Dialog/fine_grained.txt:2"


def test_images_and_partition_outside_the_root(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "celeba")  # stands in for the user's CelebA folder
    root = tmp_path / "dialog"
    root.mkdir()
    shutil.move(tmp_path / "celeba" / "text", root / "text")
    got = run_convert(
        "celeba_dialog",
        root,
        f"images={tmp_path / 'celeba' / 'img_align_celeba'}",
        f"partition={tmp_path / 'celeba' / 'Eval' / 'list_eval_partition.txt'}",
    )
    assert got.rows[0]["image"] == "../celeba/img_align_celeba/000001.jpg"
    assert (root / got.rows[0]["image"]).is_file()
    assert [r["split"] for r in got.rows] == ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    assert got.summary["kinds"] == {"caption": 12}  # no label table in this root
    assert got.summary["options"]["images"] == str(tmp_path / "celeba" / "img_align_celeba")


def test_kaggle_nested_images_and_csv_partition(tmp_path, run_convert):
    root = tmp_path / "dialog"
    fixture.write_sample(root)
    (root / "img_align_celeba").rename(tmp_path / "inner")
    (root / "img_align_celeba").mkdir()
    (tmp_path / "inner").rename(root / "img_align_celeba" / "img_align_celeba")
    partition = root / "Eval" / "list_eval_partition.txt"
    csv = "image_id,partition\n" + "".join(
        line.replace(" ", ",") + "\n" for line in partition.read_text().split("\n") if line
    )
    partition.unlink()
    (root / "list_eval_partition.csv").write_text(csv)
    got = run_convert("celeba_dialog", root)
    assert got.rows[0]["image"] == "img_align_celeba/img_align_celeba/000001.jpg"
    assert [r["split"] for r in captions(got)] == ["train"] * 8 + ["val"] * 2 + ["test"] * 2


def test_without_partition_falls_back_to_a_hash_split(tmp_path, run_convert):
    root = tmp_path / "dialog"
    fixture.write_sample(root)
    (root / "Eval" / "list_eval_partition.txt").unlink()
    got = run_convert("celeba_dialog", root)
    assert len(got.rows) == 24 and not got.rejects
    by_face = {}
    for r in got.rows:  # caption and attributes rows of one face share a split
        by_face.setdefault(r["image_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_face.values())
    assert any(n.startswith("split: hash split by CelebA face") for n in got.summary["notes"])


def test_bad_records_are_rejected_with_reasons(tmp_path, run_convert):
    root = tmp_path / "dialog"
    fixture.write_sample(root)
    path = root / "text" / "captions.json"
    data = json.loads(path.read_text())
    data["000002.jpg"] = "not an object"
    data["000003.jpg"]["overall_caption"] = None
    data["000005.jpg"]["overall_caption"] = "   "
    data["../../etc/x.jpg"] = fixture.entry("000001.jpg")
    data["000099.jpg"] = fixture.entry("000099.jpg")
    path.write_text(json.dumps(data))
    labels = root / "combined_annotation.txt"
    lines = labels.read_text().splitlines()
    lines[2] = "000002.jpg 1 2 3"  # too few fields
    lines[3] = "000003.jpg 0 0 7 0 0"  # No_Beard 7 is no degree
    lines += ["../x.jpg 0 0 0 0 0", "000098.jpg 0 0 0 0 0", lines[1]]
    labels.write_text("\n".join(lines) + "\n\n")
    (root / "img_align_celeba" / "000004.jpg").unlink()
    got = run_convert("celeba_dialog", root)
    assert got.reasons() == {
        "malformed entry": ["text/captions.json:000002.jpg"],
        "empty caption": ["text/captions.json:000003.jpg", "text/captions.json:000005.jpg"],
        "path escapes root": ["text/captions.json:../../etc/x.jpg", "combined_annotation.txt:14"],
        "image missing": [
            "text/captions.json:000004.jpg",
            "text/captions.json:000099.jpg",
            "combined_annotation.txt:5",
            "combined_annotation.txt:15",
        ],
        "malformed line": ["combined_annotation.txt:3"],
        "duplicate line": ["combined_annotation.txt:16"],
        "unknown label value": ["combined_annotation.txt:4"],
    }
    details = {r["source"]: r["detail"] for r in got.rejects}
    assert details["combined_annotation.txt:4"] == "No_Beard='7'"
    assert details["text/captions.json:000099.jpg"] == "img_align_celeba/000099.jpg"
    assert len(got.rows) == (14 - 6) + (15 - 6)  # rows in = rows out + rejects (checked by Converted)


def test_missing_caption_file_is_a_clear_error(tmp_path):
    root = tmp_path / "dialog"
    fixture.write_sample(root)
    (root / "text" / "captions.json").unlink()
    with pytest.raises(UserError, match=r"no caption file \(.*overall_caption, e.g. captions.json\) under .*dialog"):
        convert("celeba_dialog", root, tmp_path / "out")
    assert not (tmp_path / "out" / "celeba_dialog.parquet").exists()
    with pytest.raises(UserError, match=r"option captions=.*nowhere.json: no such file"):
        convert("celeba_dialog", root, tmp_path / "out", [f"captions={tmp_path / 'nowhere.json'}"])


def test_bad_files_and_options_name_the_problem(tmp_path):
    root = tmp_path / "dialog"
    fixture.write_sample(root)
    captions_file = root / "text" / "captions.json"
    with pytest.raises(
        UserError, match=r"captions.json: holds the other version's captions, not hq; pass version=standard"
    ):
        convert("celeba_dialog", root, tmp_path / "out", ["version=hq"])
    with pytest.raises(UserError, match=r"option version='HQ'; expected one of standard, hq"):
        convert("celeba_dialog", root, tmp_path / "out", ["version=HQ"])
    labels = root / "combined_annotation.txt"
    labels.write_text(labels.read_text().replace("No_Beard", "Beard"))
    with pytest.raises(UserError, match=r"combined_annotation.txt:1: expected the label header 'img_name Bangs"):
        convert("celeba_dialog", root, tmp_path / "out")
    captions_file.write_text('{"000001.jpg": {"overall_caption": "x"},\n "000002.jpg": ')
    with pytest.raises(UserError, match=r"captions.json:2: not valid JSON"):
        convert("celeba_dialog", root, tmp_path / "out", [f"captions={captions_file}"])
    captions_file.write_text('{"000001.jpg": {"caption": "x"}}')
    with pytest.raises(UserError, match=r"captions.json: not a caption file; expected a JSON object"):
        convert("celeba_dialog", root, tmp_path / "out")


def test_missing_image_folder_is_a_clear_error(tmp_path):
    root = tmp_path / "dialog"
    fixture.write_sample(root)
    shutil.rmtree(root / "img_align_celeba")
    with pytest.raises(UserError, match=r"no image folder named img_align_celeba under .*; pass images=PATH"):
        convert("celeba_dialog", root, tmp_path / "out")
