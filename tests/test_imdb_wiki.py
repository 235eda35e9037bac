import shutil
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from common.errors import UserError
from common.splits import hash_split
from converters import convert
from converters.datasets.imdb_wiki import official_age
from converters.fixtures import imdb_wiki as fixture

# (source, text) of every sample row, unfiltered, in output order (IMDb first)
UNFILTERED = [
    ("imdb_crop/imdb.mat:1", "imdb age: 69; gender: male"),
    ("imdb_crop/imdb.mat:2", "imdb age: 71; gender: male"),  # -inf face score: kept unfiltered
    ("imdb_crop/imdb.mat:3", "imdb age: 49; gender: female"),  # born in September: one less
    ("imdb_crop/imdb.mat:4", "imdb age: 82; gender: female"),
    ("imdb_crop/imdb.mat:5", "imdb age: 68"),  # gender NaN
    ("imdb_crop/imdb.mat:6", "imdb gender: male"),  # photo taken before birth: no age
    ("imdb_crop/imdb.mat:9", "imdb age: 37; gender: male"),
    ("wiki_crop/wiki.mat:1", "wiki age: 28; gender: male"),
    ("wiki_crop/wiki.mat:2", "wiki age: 39; gender: male"),
    ("wiki_crop/wiki.mat:3", "wiki age: 59; gender: male"),  # born 3 July: one less
    ("wiki_crop/wiki.mat:4", "wiki age: 31"),
    ("wiki_crop/wiki.mat:5", "wiki age: 41; gender: female"),
    ("wiki_crop/wiki.mat:6", "wiki gender: female"),  # dob 1 (year 1): implausible age
]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("written") / "imdb_wiki"
    fixture.write_sample(root)
    return root


@pytest.fixture
def sample(written, tmp_path):
    """A fresh copy of the sample for each test (the images are written once per module)."""
    root = tmp_path / "imdb_wiki"
    shutil.copytree(written, root)
    return root


def test_sample_rows_exact(written, run_convert):
    got = run_convert("imdb_wiki", written)
    assert got.rows[0] == {
        "dataset": "imdb_wiki",
        "image": "imdb_crop/01/nm0000001_rm124825600_1899-5-10_1968.jpg",
        "image_id": "imdb/01/nm0000001_rm124825600_1899-5-10_1968",
        "box": None,
        "split": "train",
        "kind": "attributes",
        "text": "imdb age: 69; gender: male",
        "attributes": [{"key": "age", "value": "69"}, {"key": "gender", "value": "male"}],
        "source": "imdb_crop/imdb.mat:1",
        "person": "imdb_wiki:imdb:1",
        "origin_id": None,
    }
    assert [(r["source"], r["text"]) for r in got.rows] == UNFILTERED
    assert [r["person"] for r in got.rows] == [
        "imdb_wiki:imdb:1",
        "imdb_wiki:imdb:1",
        "imdb_wiki:imdb:2",
        "imdb_wiki:imdb:2",
        "imdb_wiki:imdb:3",
        "imdb_wiki:imdb:5",
        "imdb_wiki:imdb:8",
        "imdb_wiki:wiki:Sami Jauhojärvi",
        "imdb_wiki:wiki:Dettmar Cramer",
        "imdb_wiki:wiki:Marc Okrand",
        None,
        "imdb_wiki:wiki:Diana Damrau",
        None,
    ]
    assert got.rows[7]["image"] == "wiki_crop/17/10000217_1981-05-05_2009.jpg"
    assert got.rows[7]["image_id"] == "wiki/17/10000217_1981-05-05_2009"
    assert all(r["box"] is None for r in got.rows)
    assert got.reasons() == {"missing value": ["imdb_crop/imdb.mat:7"], "image missing": ["imdb_crop/imdb.mat:8"]}
    assert got.summary["expected"] == {"official": {"total": 523051}, "paper": 523000}


def test_split_is_hashed_by_person_else_image(written, run_convert):
    got = run_convert("imdb_wiki", written)
    keys = pa.array([r["person"] or r["image_id"] for r in got.rows])
    assert [r["split"] for r in got.rows] == hash_split(keys).to_pylist()
    assert [r["split"] for r in got.rows] == ["train"] * 12 + ["test"]


def test_filtered_drops_are_rejects_by_reason(written, run_convert):
    got = run_convert("imdb_wiki", written, "filtered=true")
    assert [r["text"] for r in got.rows] == [
        "imdb age: 69; gender: male",
        "imdb age: 82; gender: female",
        "imdb age: 37; gender: male",
        "wiki age: 28; gender: male",
        "wiki age: 39; gender: male",
        "wiki age: 59; gender: male",
    ]
    assert got.reasons() == {
        "no face": ["imdb_crop/imdb.mat:2", "wiki_crop/wiki.mat:5"],
        "second face": ["imdb_crop/imdb.mat:3"],
        "age out of range": ["imdb_crop/imdb.mat:6", "imdb_crop/imdb.mat:7", "wiki_crop/wiki.mat:6"],
        "unknown gender": ["imdb_crop/imdb.mat:5", "wiki_crop/wiki.mat:4"],
        "image missing": ["imdb_crop/imdb.mat:8"],
    }
    assert (
        got.summary["notes"][0] == "usual filter applied: face_score >= 1.0, no second face, age 0..100, known gender"
    )
    stricter = run_convert("imdb_wiki", written, "filtered=true", "min_face_score=2.5")
    assert [r["source"] for r in stricter.rows] == [
        "imdb_crop/imdb.mat:9",
        "wiki_crop/wiki.mat:1",
        "wiki_crop/wiki.mat:2",
        "wiki_crop/wiki.mat:3",
    ]


def test_one_source_alone(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "wiki_only", sources=("wiki",))
    got = run_convert("imdb_wiki", tmp_path / "wiki_only")
    assert [(r["source"], r["text"]) for r in got.rows] == UNFILTERED[7:]
    assert "imdb: imdb.mat not found, source skipped" in got.summary["notes"]


def test_imdb_metadata_download_beside_the_crops_and_extra_level(tmp_path, run_convert):
    fixture.write_sample(tmp_path / "root" / "IMDB-WIKI", sources=("imdb",), meta_layout=True)
    got = run_convert("imdb_wiki", tmp_path / "root")
    assert [r["text"] for r in got.rows] == [text for _, text in UNFILTERED[:7]]
    assert got.rows[0]["source"] == "IMDB-WIKI/imdb/imdb.mat:1"
    assert got.rows[0]["image"] == "IMDB-WIKI/imdb_crop/01/nm0000001_rm124825600_1899-5-10_1968.jpg"
    assert got.rows[0]["image_id"] == "imdb/01/nm0000001_rm124825600_1899-5-10_1968"  # ids ignore the layout


def test_bad_records_are_rejected_with_reasons(sample, run_convert):
    fields = fixture.sample_struct("imdb")
    paths = fields["full_path"]
    paths[0, 1] = np.array([], dtype="<U1")  # no path: malformed
    paths[0, 2] = np.array([[5.0]])  # a number where a string belongs: malformed
    fields["gender"][0, 3] = 2.0  # not a gender code
    paths[0, 4] = np.array(["../../../etc/passwd.jpg"])  # escapes the root
    paths[0, 8] = paths[0, 0]  # the same image listed twice
    fixture.save(sample / "imdb_crop" / "imdb.mat", "imdb", fields)
    got = run_convert("imdb_wiki", sample)
    assert got.reasons() == {
        "malformed line": ["imdb_crop/imdb.mat:2", "imdb_crop/imdb.mat:3"],
        "duplicate line": ["imdb_crop/imdb.mat:9"],
        "unknown label value": ["imdb_crop/imdb.mat:4"],
        "missing value": ["imdb_crop/imdb.mat:7"],
        "path escapes root": ["imdb_crop/imdb.mat:5"],
        "image missing": ["imdb_crop/imdb.mat:8"],
    }
    assert next(r for r in got.rejects if r["reason"] == "unknown label value")["detail"] == "gender=2"
    assert [r["source"] for r in got.rows] == ["imdb_crop/imdb.mat:1", "imdb_crop/imdb.mat:6"] + [
        s for s, _ in UNFILTERED[7:]
    ]


def test_no_mat_file_is_a_clear_error(sample):
    (sample / "imdb_crop" / "imdb.mat").unlink()
    (sample / "wiki_crop" / "wiki.mat").unlink()
    with pytest.raises(UserError, match=r"no imdb.mat or wiki.mat under .*imdb_wiki.*expected imdb_crop/imdb.mat"):
        convert("imdb_wiki", sample, sample / "out")


def test_unreadable_mat_names_the_file(sample):
    (sample / "wiki_crop" / "wiki.mat").write_bytes(b"not a MATLAB file at all" * 10)
    with pytest.raises(UserError, match=r"wiki_crop/wiki.mat: not a readable MATLAB .mat file"):
        convert("imdb_wiki", sample, sample / "out")


def test_wrong_struct_layout_names_the_field(sample):
    fields = fixture.sample_struct("wiki")
    del fields["photo_taken"]
    fixture.save(sample / "wiki_crop" / "wiki.mat", "wiki", fields)
    with pytest.raises(UserError, match=r"wiki.mat: struct wiki has no field 'photo_taken'"):
        convert("imdb_wiki", sample, sample / "out")
    fields = fixture.sample_struct("wiki")
    fields["gender"] = fields["gender"][:, :4]
    fixture.save(sample / "wiki_crop" / "wiki.mat", "wiki", fields)
    with pytest.raises(UserError, match=r"wiki.mat: field wiki.gender has 4 entries but full_path has 6"):
        convert("imdb_wiki", sample, sample / "out")


def test_bad_option_is_a_user_error(written, tmp_path):
    with pytest.raises(UserError, match=r"option filtered='maybe'"):
        convert("imdb_wiki", written, tmp_path / "out", ["filtered=maybe"])


def test_age_follows_the_official_rule():
    rng = np.random.default_rng(7)
    dob = np.concatenate([rng.uniform(600000, 740000, 2000), [np.nan, np.inf, 0.0, 367.0, 1e8, 693962.0]])
    taken = np.concatenate([rng.integers(1900, 2016, 2000), [2000, 2000, 2000, 2000, 2000, np.nan]]).astype(float)
    age, ok = official_age(dob, taken, {"min": 0, "max": 120})
    for d, t, a, good in zip(dob, taken, age, ok):
        try:
            birth = date.fromordinal(max(int(d) - 366, 1))
            expected = int(t) - birth.year - (birth.month >= 7)
        except (ValueError, OverflowError):
            expected = None
        plausible = expected is not None and 0 <= expected <= 120
        assert good == plausible, (d, t)
        if plausible:
            assert a == expected, (d, t)
