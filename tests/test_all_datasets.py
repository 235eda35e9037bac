"""The converter contract, checked the same way for every dataset on its sample fixture."""

import re
from pathlib import Path

import pytest
from conftest import Converted

from common.records import KINDS, SPLITS
from converters import DATASETS, convert
from converters.fixtures import writer


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    for name in DATASETS:
        writer(name).write_sample(root / name)
    return root


@pytest.mark.parametrize("name", DATASETS)
def test_contract(name, samples, tmp_path):
    convert(name, samples / name, tmp_path / "a")
    got = Converted(name, tmp_path / "a")  # schema, and records in = rows out + rejects
    assert got.rows, "the sample converts to some rows"
    root = Path(got.summary["root"])
    for row in got.rows:
        assert row["dataset"] == name and row["split"] in SPLITS and row["kind"] in KINDS
        assert (root / row["image"]).is_file(), row["image"]
        assert ".." not in Path(row["image"]).parts, row["image"]
        assert re.fullmatch(r"[a-z0-9_]+/\S+", row["image_id"]) and row["text"].strip() == row["text"] != ""
        assert re.fullmatch(r".+:\S+", row["source"])
        if row["kind"] == "attributes":
            pairs = "; ".join(f"{a['key']}: {a['value']}" for a in row["attributes"])
            assert row["text"].endswith(" " + pairs), row["text"]
        else:
            assert row["attributes"] is None and "  " not in row["text"]
    for reject in got.rejects:
        assert reject["source"] and reject["reason"]


@pytest.mark.parametrize("name", DATASETS)
def test_rerun_is_byte_identical(name, samples, tmp_path):
    for out in ("a", "b"):
        convert(name, samples / name, tmp_path / out)
    for suffix in ("parquet", "rejects.jsonl", "summary.json"):
        a, b = (tmp_path / out / f"{name}.{suffix}" for out in ("a", "b"))
        assert a.read_bytes() == b.read_bytes(), suffix


@pytest.mark.parametrize("name", ["cacd", "imdb_wiki"])
def test_the_sample_mat_files_are_the_same_bytes_each_time(name, samples, tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(time, "asctime", lambda *a: "Sat Dec 31 23:59:59 2101")  # scipy's header date
    writer(name).write_sample(tmp_path / name)
    written = sorted((samples / name).rglob("*.mat"))
    assert written and all(
        p.read_bytes() == (tmp_path / name / p.relative_to(samples / name)).read_bytes() for p in written
    )
