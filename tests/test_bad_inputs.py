"""The convert stage under bad input: one table of damaged sample datasets and the outcome each must give.

An outcome is a user error (one line, naming the file: the CLI prints it and exits 2), a reject
with its reason, or a note in the summary. Wherever something is written, records in = rows out +
rejects still holds (`conftest.Converted` checks it). The output folder's own troubles (a file in
its place, a second run, a killed run's leftovers) and `convert all` follow the table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import Converted

from common.errors import UserError
from common.locks import folder_lock
from converters import convert
from converters.commands import convert_all
from converters.fixtures import writer


@dataclass
class Error:
    match: str  # a regex the one-line message must contain


@dataclass
class Reject:
    reason: str
    source: str  # the rejected record's source, or a regex of it


@dataclass
class Note:
    text: str  # a part of one summary note


def empty(rel):
    return lambda root: (root / rel).write_bytes(b"")


def append(rel, text):
    def damage(root):
        with open(root / rel, "a", encoding="utf-8") as f:
            f.write(text)

    return damage


def insert_line(rel, number, text):
    """Put `text` as line `number` (1-based) of the file."""

    def damage(root):
        lines = (root / rel).read_text(encoding="utf-8").splitlines(keepends=True)
        lines.insert(number - 1, text + "\n")
        (root / rel).write_text("".join(lines), encoding="utf-8")

    return damage


def deep_json(rel, head="", tail=""):
    return lambda root: (root / rel).write_text(head + "[" * 100_000 + "]" * 100_000 + tail)


def image_in(folder, name="1-0.jpg"):
    def damage(root):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_bytes((root / "AFAD-Full/15/111").glob("*.jpg").__next__().read_bytes())

    return damage


def folder_for_image(rel):
    def damage(root):
        (root / rel).unlink(missing_ok=True)
        (root / rel).mkdir(parents=True)

    return damage


def corrupt_v73(root):
    path = root / "celebrity2000_meta.mat"
    with h5py.File(path, "w") as f:
        f.create_group("celebrityImageData")["age"] = np.arange(50_000.0).reshape(1, -1)
    path.write_bytes(path.read_bytes()[:4096])  # an HDF5 signature, then a cut


def binary_header(root):
    path = root / "Manually_Annotated_file_lists/training.csv"
    path.write_bytes(b"\x00\x01PK\x03\x04\xff\xfe binary,\x9c\n" + path.read_bytes())


def skin_point_outside(root):
    path = root / "anno_train.json"
    records = json.loads(path.read_text())
    records[0]["skin_color"] = [2159, 1192]  # the real photo3/image0116 has this on a 475x340 photo
    path.write_text(json.dumps(records))


def thumbs_listed(root):
    lines = ["./15/111/Thumbs.db", "./38/112/Thumbs.db"]
    append("AFAD-Full/AFAD-Full.txt", "\n".join(lines) + "\n")(root)


CASES = {
    # issue 9.1: empty (0-byte) table files
    "celeba partition empty": (
        "celeba",
        empty("Eval/list_eval_partition.txt"),
        Error(r"list_eval_partition.txt: empty file"),
    ),
    "celeba identity empty": ("celeba", empty("Anno/identity_CelebA.txt"), Error(r"identity_CelebA.txt: empty file")),
    "rafdb basic list empty": (
        "rafdb",
        empty("basic/EmoLabel/list_patition_label.txt"),
        Error(r"basic/EmoLabel/list_patition_label.txt: empty file"),
    ),
    "rafdb compound list empty": (
        "rafdb",
        empty("compound/EmoLabel/list_patition_label.txt"),
        Error(r"compound/EmoLabel/list_patition_label.txt: empty file"),
    ),
    "expw label.lst empty": ("expw", empty("label/label.lst"), Error(r"label.lst: empty file")),
    "afad list empty": ("afad", empty("AFAD-Full/AFAD-Full.txt"), Error(r"AFAD-Full.txt: empty file")),
    "celeba_dialog partition empty": (
        "celeba_dialog",
        empty("Eval/list_eval_partition.txt"),
        Error(r"list_eval_partition.txt: empty file"),
    ),
    "fairface csv empty": ("fairface", empty("fairface_label_val.csv"), Error(r"fairface_label_val.csv: empty file")),
    # 9.2: a stray quote in a CSV
    "affectnet stray quote": (
        "affectnet",
        insert_line("Manually_Annotated_file_lists/training.csv", 3, '"1/x.jpg,1,1,5,5,,1,0.1,0.1'),
        Reject("malformed line", "Manually_Annotated_file_lists/training.csv:3"),
    ),
    "fairface stray quote": (
        "fairface",
        insert_line("fairface_label_train.csv", 3, 'train/"x.jpg",20-29,"Male,White,True'),
        Reject("malformed line", "fairface_label_train.csv:3"),
    ),
    # 9.3: deeply nested JSON
    "fs2k nested json": ("fs2k", deep_json("anno_train.json"), Error(r"anno_train.json: JSON nested too deeply")),
    "celeba_dialog nested json": (
        "celeba_dialog",
        deep_json("text/captions.json", '{"000001.jpg": {"overall_caption": "a face", "x": ', "}}"),
        Error(r"JSON nested too deeply"),
    ),
    # 9.4: a corrupt MATLAB v7.3 file
    "cacd corrupt v7.3": (
        "cacd",
        corrupt_v73,
        Error(r"celebrity2000_meta.mat: not a readable MATLAB v7.3 \(HDF5\) file"),
    ),
    # 9.6: binary bytes where a CSV header should be: not echoed
    "affectnet binary header": (
        "affectnet",
        binary_header,
        Error(r"training.csv:1: expected a CSV header with .*found a line that is not text"),
    ),
    # 9.7: age folders outside the manifest's range
    "afad age 999": ("afad", image_in("AFAD-Full/999/111"), Reject("age out of range", r"AFAD-Full/999/111/1-0.jpg")),
    "afad age 0": ("afad", image_in("AFAD-Full/0/112"), Reject("age out of range", r"AFAD-Full/0/112/1-0.jpg")),
    # 9.8: a folder named like an image is not an image
    "afad folder named like an image": (
        "afad",
        folder_for_image("AFAD-Full/38/112/fake-9.jpg"),
        Note("skipped 1 folders inside <age>/<gender> folders, not images (AFAD-Full/38/112/fake-9.jpg)"),
    ),
    "celeba folder named like an image": (
        "celeba",
        folder_for_image("img_align_celeba/000005.jpg"),
        Reject("image missing", "Anno/list_attr_celeba.txt:7"),
    ),
    # 9.9: a malformed identity line is said, not swallowed
    "celeba malformed identity line": (
        "celeba",
        insert_line("Anno/identity_CelebA.txt", 2, "000002.jpg 1 extra"),
        Note("identity_CelebA.txt: 1 malformed lines ignored (e.g. Anno/identity_CelebA.txt:2)"),
    ),
    # 9.11: a skin point outside the photo spoils the skin colour only
    "fs2k skin point outside": ("fs2k", skin_point_outside, Note("skin point outside the photo in 1 records")),
    # 9.12: list lines naming no image are not records (never `image missing`)
    "afad Thumbs.db listed": (
        "afad",
        thumbs_listed,
        Note("2 lines of AFAD-Full/AFAD-Full.txt name files that are not images (Thumbs.db 2)"),
    ),
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return tmp_path_factory.mktemp("pristine")


def sample(samples: Path, name: str, tmp_path: Path) -> Path:
    """A fresh copy of the dataset's sample (written once per module, copied per case)."""
    if not (samples / name).exists():
        writer(name).write_sample(samples / name)
    shutil.copytree(samples / name, tmp_path / name, symlinks=True)
    return tmp_path / name


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, samples, tmp_path):
    name, damage, expected = CASES[case]
    root = sample(samples, name, tmp_path)
    damage(root)
    out = tmp_path / "out"
    if isinstance(expected, Error):
        with pytest.raises(UserError) as error:
            convert(name, root, out)
        message = str(error.value)
        assert "\n" not in message, message
        assert re.search(expected.match, message), message
        assert not (out / f"{name}.summary.json").exists()
        return
    convert(name, root, out)
    got = Converted(name, out)  # records in = rows out + rejects
    if isinstance(expected, Reject):
        sources = got.reasons().get(expected.reason, [])
        assert any(re.fullmatch(f".*{expected.source}", s) for s in sources), got.reasons()
    else:
        assert any(expected.text in note for note in got.summary["notes"]), got.summary["notes"]
    assert not [r for r in got.rejects if r["detail"].endswith(("Thumbs.db", "fake-9.jpg"))], got.rejects
    if case == "fs2k skin point outside":  # the record stays, without its skin colour
        first = next(r for r in got.rows if r["source"] == "anno_train.json:0")
        assert "skin color" not in first["text"] and "hair" in first["text"]


# -- the output folder ----------------------------------------------------------------------------
def test_out_is_a_file_or_unwritable(samples, tmp_path):
    root = sample(samples, "expw", tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"file: exists and is not a folder"):
        convert("expw", root, tmp_path / "file")
    with pytest.raises(UserError, match=r"file/out: cannot write there"):
        convert("expw", root, tmp_path / "file" / "out")


def test_a_second_run_on_the_same_out_is_refused(samples, tmp_path):
    root = sample(samples, "expw", tmp_path)
    refused = pytest.raises(UserError, match=r"out: another convert is writing there \(it holds \.lock\)")
    with folder_lock(tmp_path / "out", "convert"), refused:
        convert("expw", root, tmp_path / "out")
    convert("expw", root, tmp_path / "out")  # released with the block


def test_the_lock_dies_with_its_process(tmp_path):
    code = (
        "import os, sys; sys.path.insert(0, os.getcwd()); from common.locks import folder_lock\n"
        f"with folder_lock({str(tmp_path / 'out')!r}, 'convert'):\n    os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == -9
    with folder_lock(tmp_path / "out", "convert"):
        pass


def test_a_rerun_removes_the_temporaries_of_a_killed_run(samples, tmp_path):
    root = sample(samples, "expw", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".expw.parquet.tmp-99999", out / ".expw.rejects.jsonl.tmp-123", out / ".expw.summary.json.tmp-7"]
    other = out / ".celeba.parquet.tmp-99999"  # not this dataset's: left alone
    for path in [*stale, other]:
        path.write_bytes(b"x" * 1000)
    convert("expw", root, out)
    assert not any(p.exists() for p in stale) and other.exists()


# -- convert all -----------------------------------------------------------------------------------
def test_convert_all_goes_on_after_a_failing_dataset(samples, tmp_path):
    roots = tmp_path / "roots"
    roots.mkdir()
    sample(samples, "celeba", roots)
    sample(samples, "expw", roots)
    empty("Eval/list_eval_partition.txt")(roots / "celeba")
    results = {r["dataset"]: r for r in convert_all(roots, tmp_path / "out")}
    assert (
        results["celeba"]["status"].startswith("failed: ")
        and "list_eval_partition.txt: empty file" in results["celeba"]["status"]
    )
    assert results["expw"]["status"] == "converted"
    Converted("expw", tmp_path / "out")


@pytest.mark.parametrize(
    "text, match",
    [
        ("celeba: nowhere\n", r"roots.yaml: not a folder: celeba: .*nowhere"),
        ("celeba: [unclosed\n", r"roots.yaml:2: not a valid YAML mapping of dataset names to paths \("),
    ],
)
def test_convert_all_with_a_bad_yaml_is_one_line(text, match, tmp_path):
    (tmp_path / "roots.yaml").write_text(text)
    with pytest.raises(UserError, match=match) as error:
        convert_all(tmp_path / "roots.yaml", tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not os.path.exists(tmp_path / "out")
