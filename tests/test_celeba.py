import pytest

from common.errors import UserError
from converters.fixtures import celeba as fixture

ATTRS = fixture.ATTRIBUTES


def expected_text(i: int) -> str:
    values = dict(zip(ATTRS, fixture.values_for(i)))
    pairs = [f"gender: {'male' if values['Male'] == 1 else 'female'}"]
    for name in ATTRS:
        if name != "Male":
            pairs.append(f"{name.replace('_', ' ').lower()}: {'true' if values[name] == 1 else 'false'}")
    return "celeba " + "; ".join(pairs)


def test_sample_rows_exact(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "celeba")
    got = run_convert("celeba", tmp_path / "celeba")
    assert len(got.rows) == fixture.SAMPLE_IMAGES and not got.rejects
    first = got.rows[0]
    assert first == {
        "dataset": "celeba",
        "image": "img_align_celeba/000001.jpg",
        "image_id": "celeba/000001",
        "box": None,
        "split": "train",
        "kind": "attributes",
        "text": expected_text(1),
        "attributes": first["attributes"],
        "source": "Anno/list_attr_celeba.txt:3",
        "person": "celeba:1",
        "origin_id": None,
    }
    assert [a["key"] for a in first["attributes"]][:3] == ["gender", "5 o clock shadow", "arched eyebrows"]
    assert first["text"] == "celeba " + "; ".join(f"{a['key']}: {a['value']}" for a in first["attributes"])
    assert [r["text"] for r in got.rows] == [expected_text(i) for i in range(1, 13)]
    assert [r["split"] for r in got.rows] == ["train"] * 9 + ["val"] + ["test"] * 2
    assert got.summary["splits"] == {"train": 9, "val": 1, "test": 2}
    assert got.summary["expected"]["paper"] == 203000


def test_kaggle_layout_gives_same_texts(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "official")
    fixture.write_sample(tmp_path / "kaggle" / "extra_level", kaggle=True)
    official = run_convert("celeba", tmp_path / "official")
    kaggle = run_convert("celeba", tmp_path / "kaggle")
    assert [r["text"] for r in kaggle.rows] == [r["text"] for r in official.rows]
    assert kaggle.rows[0]["image"] == "extra_level/img_align_celeba/img_align_celeba/000001.jpg"
    assert kaggle.rows[0]["source"] == "extra_level/list_attr_celeba.csv:2"
    assert kaggle.rows[0]["person"] is None  # the Kaggle mirror has no identity file


def test_bad_rows_are_rejected_with_reasons(tmp_path, run_convert):
    root = tmp_path / "celeba"
    fixture.write_sample(root)
    attr = root / "Anno" / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 3)[0]  # 000002: malformed (too few fields)
    lines[4] = fixture.attr_line("000003.jpg", [7] + fixture.values_for(3)[1:])  # unknown value 7
    lines.append(fixture.attr_line("../../etc/passwd", fixture.values_for(1)))  # escapes the root
    lines.append(fixture.attr_line("000099.jpg", fixture.values_for(1)))  # image not on disk
    lines.append(lines[2])  # duplicate of 000001
    attr.write_text("\n".join(lines) + "\n\n")
    (root / "img_align_celeba" / "000004.jpg").unlink()
    got = run_convert("celeba", root)
    reasons = got.reasons()
    assert reasons == {
        "malformed line": ["Anno/list_attr_celeba.txt:4"],
        "unknown label value": ["Anno/list_attr_celeba.txt:5"],
        "path escapes root": ["Anno/list_attr_celeba.txt:15"],
        "image missing": ["Anno/list_attr_celeba.txt:6", "Anno/list_attr_celeba.txt:16"],
        "duplicate line": ["Anno/list_attr_celeba.txt:17"],
    }
    assert next(r for r in got.rejects if r["reason"] == "unknown label value")["detail"] == "5_o_Clock_Shadow='7'"
    assert len(got.rows) == 12 - 3  # rows in = rows out + rejects (checked by Converted)
    assert "declares 12 images" in got.summary["notes"][0]


def test_missing_annotation_file_is_a_clear_error(tmp_path):
    from converters import convert

    root = tmp_path / "celeba"
    fixture.write_sample(root)
    (root / "Anno" / "list_attr_celeba.txt").unlink()
    with pytest.raises(UserError, match=r"no file named list_attr_celeba.txt or list_attr_celeba.csv under .*celeba"):
        convert("celeba", root, tmp_path / "out")
    assert not (tmp_path / "out" / "celeba.parquet").exists()


def test_wrong_header_names_the_file_and_line(tmp_path):
    from converters import convert

    root = tmp_path / "celeba"
    fixture.write_sample(root)
    attr = root / "Anno" / "list_attr_celeba.txt"
    attr.write_text(attr.read_text().replace("Bald", "Baldness", 1))
    with pytest.raises(UserError, match=r"list_attr_celeba.txt:2: attribute names differ.*Baldness"):
        convert("celeba", root, tmp_path / "out")


def test_a_killed_rerun_leaves_no_stale_summary(tmp_path, monkeypatch):
    from converters import convert
    from converters.helpers import converted

    fixture.write_sample(tmp_path / "celeba")
    convert("celeba", tmp_path / "celeba", tmp_path / "out")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(converted, "write_jsonl", killed)  # dies after the Parquet file, before the summary
    with pytest.raises(KeyboardInterrupt):
        convert("celeba", tmp_path / "celeba", tmp_path / "out")
    assert not (tmp_path / "out" / "celeba.summary.json").exists()
    assert not list((tmp_path / "out").glob(".*tmp*"))  # no temporary file left behind
    monkeypatch.undo()
    convert("celeba", tmp_path / "celeba", tmp_path / "out")
    assert (tmp_path / "out" / "celeba.summary.json").exists()
