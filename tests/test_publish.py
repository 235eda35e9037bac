"""The one way a folder is published (`common.fileio`) and the one lock policy (`common.locks`), as every
stage that writes a folder uses them: killed runs' leftovers are cleaned, a second writer is refused."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import UserError
from common.fileio import atomic_folder, publish_folder, remove_temporaries, temporary_name
from common.locks import folder_lock
from trainer import checkpoint
from trainer.config import load_config
from trainer.model import Talk2Face

REPO = Path(__file__).resolve().parents[1]

KILLED_WHILE_PUBLISHING = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from common import fileio
final = Path({final!r})
with fileio.atomic_folder(final) as tmp:
    (tmp / "a.txt").write_text("new")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_publish_replaces_the_old_folder_whole(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp = temporary_name(final, "1")
    tmp.mkdir()
    (tmp / "new.txt").write_text("new")
    assert publish_folder(tmp, final) == final
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]  # nothing of the old folder is mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old one, moved aside, is gone


def test_a_failed_block_publishes_nothing_and_leaves_the_old_folder(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(final) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_killed_runs_leftovers_are_cleaned_by_the_next_run(tmp_path):
    final = tmp_path / "out"
    script = KILLED_WHILE_PUBLISHING.format(repo=str(REPO), final=str(final))
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.tmp-") and not final.exists()
    aside = temporary_name(final, "99999-old")  # a kill between the two renames of a replacement
    aside.mkdir()
    other = temporary_name(tmp_path / "other", "99999")  # another folder's: left alone
    other.write_text("x")
    with atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-99999", "out"]
    assert (final / "a.txt").read_text() == "new"


def test_remove_temporaries_takes_many_paths_and_patterns(tmp_path):
    names = [
        ".a.tar.tmp-1",
        ".a.stats.json.tmp-2",
        ".b.tar.tmp-3",
        ".step-0000004.tmp-5-old",
        ".step-0000008.tmp-6",
        "a.tar",
        ".latest.tmp-7",
    ]
    for name in names:
        (tmp_path / name).mkdir() if "step" in name else (tmp_path / name).write_text("x")
    assert remove_temporaries(tmp_path / "a.tar", tmp_path / "a.stats.json", tmp_path / "missing" / "x") == 2
    assert remove_temporaries(tmp_path / "step-*") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.tar.tmp-3", ".latest.tmp-7", "a.tar"]


def test_a_second_writer_is_refused_with_one_line(tmp_path):
    out = tmp_path / "run"
    with folder_lock(out, "train"):
        with pytest.raises(UserError) as caught, folder_lock(out, "train"):
            pass
        assert str(caught.value) == (
            f"{out}: another train is writing there (it holds .lock); "
            "wait for it to finish or choose another output folder"
        )
    with folder_lock(out, "train"):  # released with the block
        pass


def test_a_folder_replaced_whole_is_locked_beside_it_and_not_created(tmp_path):
    out = tmp_path / "corpus"
    with folder_lock(out, "build-corpus", whole=True):
        assert not out.exists() and (tmp_path / ".corpus.lock").is_file()
        with (
            pytest.raises(UserError, match="another build-corpus is writing there"),
            folder_lock(out, "build-corpus", whole=True),
        ):
            pass
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(UserError, match=r"^--out .*file: exists and is not a folder$"),
        folder_lock(tmp_path / "file", "build-corpus", whole=True),
    ):
        pass


def test_checkpoint_save_publishes_whole_and_cleans_killed_saves(tmp_path):
    torch.manual_seed(0)
    model = Talk2Face(load_config("tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    run = tmp_path / "run"
    stale = [
        checkpoint.step_folder(run, 3).with_name(".step-0000003.tmp-99999"),
        checkpoint.step_folder(run, 4).with_name(".step-0000004.tmp-99999-old"),
    ]
    for folder in stale:
        folder.mkdir(parents=True)
        (folder / "half.bin").write_bytes(b"x")
    first = checkpoint.save(run, 4, model, optimizer, {"step": 4}, {"lr": 1}, keep=2)
    assert checkpoint.is_checkpoint(first) and checkpoint.latest(run) == first
    assert sorted(p.name for p in first.parent.iterdir()) == ["latest", "step-0000004"]
    again = checkpoint.save(run, 4, model, optimizer, {"step": 4, "again": True}, {"lr": 2}, keep=2)
    assert torch.load(again / checkpoint.STATE_FILE, weights_only=True) == {"step": 4, "again": True}  # replaced
    for step in (8, 12):
        checkpoint.save(run, step, model, optimizer, {"step": step}, {}, keep=2)
    assert checkpoint.all_steps(run) == [8, 12] and not any(p.name.startswith(".") for p in first.parent.iterdir())
    assert checkpoint.log_files(run)["plot"] == run / "loss.png"
