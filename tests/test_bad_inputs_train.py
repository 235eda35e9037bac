"""The train side under bad input, faults and real use: one table per class, each row a damage and the outcome.

An outcome is a user error (one line naming the file or option and the field), or a run that goes on as the
rule says. Classes: model config values; training arguments; the files a --resume reads; what may change on
--resume; a NaN loss; two runs on one folder and a checkpoint write that fails; inspect-model's summary;
the console and the CLI's defaults.
"""

from __future__ import annotations

import dataclasses
import json
import math
import resource
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from train_fixture import one_thread, write_shards  # noqa: F401 - one_thread: an autouse fixture

import cli as cli_module
from common.errors import UserError
from common.locks import folder_lock
from trainer import checkpoint
from trainer.config import CONFIG_DIR, PRESETS, ModelConfig, load_config, parameter_count
from trainer.data import DataConfig
from trainer.model import Talk2Face
from trainer.run import TrainConfig
from trainer.train import LossModel, train
from trainer.weights import load_model

REPO = Path(__file__).resolve().parents[1]
SMALL = {
    "model": "tiny",
    "batch_size": 8,
    "micro_batch_size": 8,
    "max_steps": 2,
    "save_every": 2,
    "val_every": 2,
    "data": DataConfig(shuffle_buffer=16, pool=2, val_faces=4),
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("bad-train") / "shards", train_faces=24, val_faces=8)


@pytest.fixture(scope="module")
def base_run(shards, tmp_path_factory):
    """A finished 2-step tiny run; each test copies it before damaging it."""
    run = tmp_path_factory.mktemp("base") / "run"
    train(shards, run, TrainConfig(**SMALL), progress=False)
    return run


def copy_run(base_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(base_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    return tmp_path / "run"


def cli(*args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *args],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=limit if limit_bytes else None,
    )


def invoke(*args: str):
    """The CLI in this process (CliRunner: stderr is not a terminal); `.returncode`, `.stdout`, `.stderr` as above."""
    result = CliRunner().invoke(cli_module.main, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


# ----------------------------------------------------------------------------- 1. model config values
TINY = json.loads((CONFIG_DIR / "tiny.json").read_text())
MODEL_CONFIGS = [
    ("missing field", {k: v for k, v in TINY.items() if k != "heads"}, r"misses heads \(no value is filled in"),
    ("unknown key", {**TINY, "layer": 2}, r"unknown model config key layer"),
    ("no layers", {**TINY, "layers": 0}, r"layers 0: must be at least 1"),
    ("negative layers", {**TINY, "layers": -2}, r"layers -2: must be at least 1"),
    ("no heads", {**TINY, "heads": 0}, r"heads 0: must be at least 1"),
    ("negative hidden size", {**TINY, "hidden_size": -32}, r"hidden_size -32: must be at least 1"),
    ("dropout 1.5", {**TINY, "dropout": 1.5}, r"dropout 1.5: must be in \[0, 1\)"),
    ("dropout 1", {**TINY, "dropout": 1}, r"dropout 1: must be in \[0, 1\)"),
    ("string size", {**TINY, "hidden_size": "32"}, r"hidden_size: expected int, got '32'"),
    ("bool size", {**TINY, "layers": True}, r"layers: expected int, got True"),
    ("float size", {**TINY, "heads": 4.0}, r"heads: expected int, got 4.0"),
    ("string dropout", {**TINY, "dropout": "0.1"}, r"dropout: expected float, got '0.1'"),
    ("not an object", [1, 2], r"expected a JSON object"),
    (
        "released, no layers",
        {**json.loads((CONFIG_DIR / "released_base_config.json").read_text()), "layers_num": 0},
        r"layers 0: must be at least 1",
    ),
]


@pytest.mark.parametrize("values, match", [row[1:] for row in MODEL_CONFIGS], ids=[row[0] for row in MODEL_CONFIGS])
def test_a_bad_model_config_is_one_line_naming_file_and_field(tmp_path, values, match):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(values))
    with pytest.raises(UserError, match=match) as e:
        load_config(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


TOO_BIG = [
    ("hidden size 2^20", {"hidden_size": 2**20, "heads": 2**10}),
    ("sequence of 10^8", {"seq_length": 10**8, "max_positions": 10**8}),
]


@pytest.mark.parametrize("changes", [row[1] for row in TOO_BIG], ids=[row[0] for row in TOO_BIG])
def test_a_model_too_big_for_memory_is_refused_before_allocating(shards, tmp_path, changes):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({**TINY, **changes}))
    with pytest.raises(UserError, match=r"training this model needs at least [\d,.]+ GiB .* the device has"):
        train(shards, tmp_path / "run", TrainConfig(**{**SMALL, "model": str(path)}), progress=False)
    assert checkpoint.latest(tmp_path / "run") is None


def test_presets_are_the_only_defaults():
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(ModelConfig))
    paper = load_config("paper")
    assert paper.numbers == "whole" and load_config(CONFIG_DIR / "released_base_config.json") == paper
    for name in PRESETS:
        config = load_config(name)
        with torch.device("meta"):
            assert parameter_count(config) == Talk2Face(config).num_parameters(), name


# ----------------------------------------------------------------------------- 2. training arguments
ARGUMENTS = [
    ({"batch_size": 0}, r"--batch-size 0: must be at least 1"),
    ({"batch_size": -8}, r"--batch-size -8: must be at least 1"),
    ({"micro_batch_size": 0}, r"--micro-batch-size 0: must be at least 1"),
    ({"lr": 0.0}, r"--lr 0.0: must be a positive finite number"),
    ({"lr": -1.0}, r"--lr -1.0: must be a positive finite number"),
    ({"lr": math.inf}, r"--lr inf: must be a positive finite number"),
    ({"lr": math.nan}, r"--lr nan: must be a positive finite number"),
    ({"max_steps": 0}, r"--max-steps 0: must be at least 1"),
    ({"save_every": 0}, r"--save-every 0: must be at least 1"),
    ({"val_every": 0}, r"--val-every 0: must be at least 1"),
    ({"log_every": -1}, r"--log-every -1: must be at least 1"),
    ({"seed": "7"}, r"seed: expected int, got '7'"),
    ({"warmup_fraction": 2.0}, r"warmup_fraction 2.0: must be a finite number >= 0 and <= 1"),
    ({"grad_clip": math.nan}, r"grad_clip nan: must be a finite number >= 0"),
    ({"frobnicate": 1}, r"unknown training setting frobnicate"),
]


@pytest.mark.parametrize("overrides, match", ARGUMENTS, ids=[next(iter(row[0])) + str(row[0]) for row in ARGUMENTS])
def test_a_bad_training_argument_is_refused_before_any_work(shards, tmp_path, overrides, match):
    with pytest.raises(UserError, match=match):
        train(shards, tmp_path / "run", TrainConfig(**SMALL), progress=False, **overrides)
    assert checkpoint.latest(tmp_path / "run") is None


def test_a_bad_argument_on_the_command_line_is_one_line(shards, tmp_path):
    proc = invoke("train", "--shards", str(shards), "--out", str(tmp_path / "run"), "--config", "tiny", "--lr", "nan")
    assert "--lr nan: must be a positive finite number" in one_line_error(proc)


# ----------------------------------------------------------------------------- 3. the files --resume reads
def edit_json(name, change):
    def damage(folder):
        values = json.loads((folder / name).read_text())
        change(values)
        (folder / name).write_text(json.dumps(values))

    return damage


def edit_state(change):
    def damage(folder):
        state = torch.load(folder / checkpoint.STATE_FILE, weights_only=True)
        change(state)
        torch.save(state, folder / checkpoint.STATE_FILE)

    return damage


RESUME_FILES = [
    (
        "train config: unknown key",
        edit_json("train-config.json", lambda v: v.update(speed=3)),
        r"train-config.json: unknown train config key speed",
    ),
    (
        "train config: wrong type",
        edit_json("train-config.json", lambda v: v.update(max_steps="2")),
        r"train-config.json: max_steps: expected int, got '2'",
    ),
    (
        "train config: missing entry",
        edit_json("train-config.json", lambda v: v.pop("optim")),
        r"train-config.json: the train config misses optim",
    ),
    (
        "train config: optim missing lr",
        edit_json("train-config.json", lambda v: v["optim"].pop("lr")),
        r"train-config.json: the optim config misses lr",
    ),
    ("train config: not JSON", lambda f: (f / "train-config.json").write_text("{"), r"train-config.json: unreadable"),
    ("train config: absent", lambda f: (f / "train-config.json").unlink(), r"train-config.json missing"),
    (
        "trainer state: missing entry",
        edit_state(lambda s: s.pop("schedule")),
        r"trainer-state.pt: the entry 'schedule' is missing",
    ),
    ("trainer state: wrong type", edit_state(lambda s: s.update(step="2")), r"trainer-state.pt: step must be int"),
    ("trainer state: unknown entry", edit_state(lambda s: s.update(extra=1)), r"trainer-state.pt: unknown entry extra"),
    ("trainer state: wrong step", edit_state(lambda s: s.update(step=5)), r"trainer-state.pt: step 5, .* step-0000002"),
    (
        "trainer state: truncated",
        lambda f: (f / checkpoint.STATE_FILE).write_bytes(b"PK\x03"),
        r"trainer-state.pt: unreadable",
    ),
    (
        "model config: wrong type",
        edit_json("config.json", lambda v: v.update(layers="2")),
        r"config.json: model config: layers: expected int",
    ),
]


@pytest.mark.parametrize("damage, match", [row[1:] for row in RESUME_FILES], ids=[row[0] for row in RESUME_FILES])
def test_a_damaged_checkpoint_file_is_one_line_on_resume(base_run, shards, tmp_path, damage, match):
    run = copy_run(base_run, tmp_path)
    damage(checkpoint.latest(run))
    with pytest.raises(UserError, match=match) as e:  # the base run is complete: lengthen it to read its state
        train(shards, run, resume=True, reschedule=True, max_steps=3, progress=False)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- 4. what may change on --resume
RESUME_CHANGES = [
    ({"lr": 1e-3}, False, r"--lr 0.001 cannot change on --resume"),
    ({"max_steps": 4}, False, r"--max-steps 4: the run's warm-up/decay schedule spans 2 steps; pass --reschedule"),
    ({"max_steps": 2}, True, r"--reschedule needs a new --max-steps"),
    ({"max_steps": 1}, True, r"--max-steps 1: the run already took 2 steps"),
    ({"micro_batch_size": 4, "batch_size": 8}, False, r"--micro-batch-size 4 cannot change on --resume"),
    ({"seed": 5}, False, r"--seed 5 cannot change on --resume"),
    ({"datasets": "cacd, celeba"}, False, r"--datasets cacd,celeba cannot change on --resume \(the run has all and"),
    ({"shuffle_buffer": 4}, False, r"--shuffle-buffer 4 cannot change on --resume \(the run has 16"),
    ({}, False, r"the run is complete \(2 of 2 steps\); give a larger --max-steps with --reschedule"),
    ({"model": "demo"}, False, r"--config demo: the checkpoint was saved with another config: hidden_size 32 vs 64"),
]


@pytest.mark.parametrize("overrides, reschedule, match", RESUME_CHANGES, ids=[str(row[0]) for row in RESUME_CHANGES])
def test_resume_refuses_what_the_run_fixed_at_its_start(base_run, shards, tmp_path, overrides, reschedule, match):
    run = copy_run(base_run, tmp_path)
    with pytest.raises(UserError, match=match):
        train(shards, run, resume=True, reschedule=reschedule, progress=False, **overrides)
    assert checkpoint.all_steps(run) == [2]


def test_resume_with_reschedule_follows_the_new_schedule_and_free_settings_may_change(base_run, shards, tmp_path):
    run = copy_run(base_run, tmp_path)
    summary = train(
        shards,
        run,
        resume=True,
        reschedule=True,
        max_steps=4,
        save_every=1,
        log_every=1,
        skip_bad_shards=True,
        datasets=[],
        progress=False,
    )  # the run's datasets (all), given again
    assert summary["resumed_from"] == 2 and checkpoint.all_steps(run)[-1] == 4
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    # 4 steps, warm-up 1: step k (0-based) runs at lr (4 - k) / 3 of the peak
    assert [r["lr"] for r in rows[2:]] == pytest.approx([2e-4 * 2 / 3, 2e-4 * 1 / 3])
    recorded = TrainConfig.from_dict(json.loads((run / "train-config.json").read_text()))
    assert recorded.max_steps == 4 and recorded.data.skip_bad_shards and recorded.data.datasets == ()


def test_tensorboard_drops_the_steps_a_resumed_run_repeats(base_run, shards, tmp_path, monkeypatch):
    opened = []

    class Writer:  # records how the run opens TensorBoard (the package is optional, not installed here)
        def __init__(self, log_dir, purge_step=None):
            opened.append(purge_step)

        def add_scalar(self, *args):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    run = copy_run(base_run, tmp_path)
    train(shards, run, resume=True, reschedule=True, max_steps=3, progress=False)
    train(shards, tmp_path / "new", TrainConfig(**{**SMALL, "max_steps": 1}), progress=False)
    assert opened == [3, None]  # events of steps >= 3 (logged before a kill) are purged on resume


# ----------------------------------------------------------------------------- 5. a NaN loss
def test_a_nan_loss_stops_the_run_and_never_overwrites_the_good_checkpoint(base_run, shards, tmp_path, monkeypatch):
    run = copy_run(base_run, tmp_path)
    good = load_model(checkpoint.latest(run)).state_dict()
    real = LossModel.forward
    monkeypatch.setattr(LossModel, "forward", lambda self, *a: real(self, *a) * math.nan)
    with pytest.raises(
        UserError,
        match=r"step 3: the training loss is nan .* the last checkpoint \(step-0000002\) is "
        r"untouched",
    ):
        train(shards, run, resume=True, reschedule=True, max_steps=4, save_every=1, progress=False)
    assert checkpoint.all_steps(run) == [2]
    after = load_model(checkpoint.latest(run)).state_dict()
    assert all(torch.equal(good[k], after[k]) for k in good)


# ----------------------------------------------------------------------------- 6. faults and concurrency
def test_a_second_train_on_the_same_folder_is_refused(shards, tmp_path):
    # the lock is what a running `train` holds
    with folder_lock(tmp_path / "run", "train"), pytest.raises(UserError, match=r"another train is writing there"):
        train(shards, tmp_path / "run", TrainConfig(**SMALL), progress=False)


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_the_previous_stays(base_run, shards, tmp_path):
    run = copy_run(base_run, tmp_path)
    limit = (checkpoint.latest(run) / "model.safetensors").stat().st_size // 2  # the model file cannot fit
    proc = cli(
        "train",
        "--shards",
        str(shards),
        "--out",
        str(run),
        "--resume",
        "--reschedule",
        "--max-steps",
        "3",
        limit_bytes=limit,
    )
    line = one_line_error(proc)
    assert "step-0000003: the checkpoint could not be written" in line and "step-0000002 stays" in line
    assert checkpoint.all_steps(run) == [2] and not list((run / "checkpoints").glob(".step-*"))
    load_model(checkpoint.latest(run))
    train(shards, run, resume=True, reschedule=True, max_steps=3, progress=False)  # still resumable


def test_inspect_model_summarises_a_mismatch_and_lists_every_key_on_request(tmp_path):
    path = tmp_path / "tiny.bin"
    torch.save(Talk2Face(load_config("tiny")).state_dict(), path)
    short = one_line_error(invoke("inspect-model", "--checkpoint", str(path)))
    assert len(short) < 1000 and "missing 160: " in short and "and 157 more" in short and "--all-keys" in short
    full = one_line_error(invoke("inspect-model", "--checkpoint", str(path), "--all-keys"))
    assert full.count("encoder.transformer.") > 150
    assert json.loads(invoke("inspect-model", "--checkpoint", str(path), "--config", "tiny").stdout)["parameters"] > 0


# ----------------------------------------------------------------------------- 7-8. the console and the defaults
def test_the_console_off_a_terminal_is_plain_lines_with_lr_grad_norm_and_validation(shards, tmp_path):
    proc = invoke(
        "train",
        "--shards",
        str(shards),
        "--out",
        str(tmp_path / "run"),
        "--config",
        "tiny",
        "--batch-size",
        "8",
        "--micro-batch-size",
        "8",
        "--max-steps",
        "4",
        "--log-every",
        "2",
        "--val-every",
        "4",
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("step ") and " lr " in line] == ["2/4", "4/4"]
    assert any(line.startswith("step 4/4 validation loss caption_to_face ") for line in lines), proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(r["lr"] > 0 and r["grad_norm"] > 0 for r in rows)


def test_the_cli_shows_the_dataclass_defaults_and_one_name_per_idea():
    from trainer.generate import Sampling

    train_help = invoke("train", "--help").stdout
    assert f"[default: {TrainConfig().max_steps}]" in train_help and "paper, demo, tiny" in train_help
    assert "[default: pipeline_demo" not in invoke("demo", "--help").stdout
    assert f"[default: {Sampling().top_k}]" in invoke("generate", "--help").stdout
    for command in ("generate", "evaluate"):
        text = invoke(command, "--help").stdout
        assert "--precision" in text and "--dtype" not in text
    assert "--split-seed" in invoke("build-corpus", "--help").stdout
    written = [
        (name, p.name)
        for name, command in cli_module.main.commands.items()
        for p in command.params
        if "[default" in (getattr(p, "help", None) or "")
    ]
    assert written == []  # click shows every default, from the dataclasses or show_default
    assert invoke("--version").stdout.startswith("talk2face, version ")
