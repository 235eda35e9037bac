"""train: the data stream, exact resume, DDP equivalence, task balance, target-only loss, never a test face, errors."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from train_fixture import one_thread, write_shards  # noqa: F401 - one_thread: an autouse fixture

from common.errors import UserError
from facetokens import shards
from trainer import checkpoint
from trainer.config import load_config, save_config
from trainer.data import TASKS, DataConfig, TaskReader, TrainStream
from trainer.sequences import IGNORE, Layouts
from trainer.text import TextTokenizer
from trainer.train import LossModel, TrainConfig, train
from trainer.weights import load_model

REPO = Path(__file__).resolve().parents[1]
DATA = DataConfig(shuffle_buffer=24, pool=4, val_faces=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    no_dropout = folder / "tiny-no-dropout.json"
    save_config(load_config("tiny").replace(dropout=0.0), no_dropout)
    return {"folder": folder, "shards": write_shards(folder / "shards"), "no_dropout": str(no_dropout)}


def config(**changes) -> TrainConfig:
    base = {
        "model": "tiny",
        "batch_size": 16,
        "micro_batch_size": 8,
        "max_steps": 8,
        "save_every": 4,
        "val_every": 4,
        "data": DATA,
    }
    return TrainConfig(**{**base, **changes})


def params(run: Path) -> dict:
    return load_model(checkpoint.latest(run)).state_dict()


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def layouts():
    tiny = load_config("tiny")
    return Layouts(tiny, TextTokenizer.for_config(tiny))


# ----------------------------------------------------------------------------- the stream
def test_every_batch_is_balanced_and_loss_is_only_on_targets(corpus):
    stream = TrainStream(corpus["shards"], layouts(), DATA, 8, range(2), 2, seed=1)
    for k in (0, 1) * 6:
        batch = stream.next_batch(k)
        assert torch.bincount(batch["tasks"], minlength=4).tolist() == [2, 2, 2, 2]
        labelled = batch["labels"] != IGNORE
        target_next = torch.zeros_like(labelled)
        target_next[:, :-1] = batch["segments"][:, 1:] == 2
        assert torch.equal(labelled, target_next)  # position i carries a label iff token i + 1 is a target token
        assert torch.equal(batch["labels"][:, :-1][labelled[:, :-1]], batch["tokens"][:, 1:][labelled[:, :-1]])
        assert 0 <= batch["padding"] < 0.5
    from trainer.model import Talk2Face

    model = Talk2Face(load_config("tiny")).eval()
    logits = model(batch["tokens"], batch["segments"])
    manual = F.cross_entropy(logits[labelled], batch["labels"][labelled])
    assert torch.allclose(LossModel(model)(batch["tokens"], batch["segments"], batch["labels"]), manual)


def test_streams_split_the_shards_without_duplicates_and_every_stream_has_work():
    for n_shards in (1, 3, 7, 9):
        urls = [f"s{i}" for i in range(n_shards)]
        for total in (1, 2, 4, 8):
            units = [(url, 0, 1) for url in urls]
            readers = [TaskReader("face_to_attributes", units, v, total, seed=0, capacity=1) for v in range(total)]
            seen = {v + j * total: r.unit_at(j)[0] for v, r in enumerate(readers) for j in range(2 * n_shards)}
            for epoch in (0, 1):  # the streams together read every shard once per epoch
                assert sorted(seen[s] for s in range(epoch * n_shards, (epoch + 1) * n_shards)) == urls
            assert len({seen[s] for s in range(min(total, n_shards))}) == min(total, n_shards)


def test_stream_state_resumes_the_exact_batches(corpus):
    a = TrainStream(corpus["shards"], layouts(), DATA, 8, range(1), 1, seed=3)
    for _ in range(7):
        a.next_batch(0)
    state = a.state()
    b = TrainStream(corpus["shards"], layouts(), DATA, 8, range(1), 1, seed=3)
    b.load_state(state["streams"])
    for _ in range(6):
        x, y = a.next_batch(0), b.next_batch(0)
        assert torch.equal(x["tokens"], y["tokens"]) and torch.equal(x["labels"], y["labels"])


# ----------------------------------------------------------------------------- the loop
def test_sixty_steps_reduce_the_loss(corpus):
    run = corpus["folder"] / "learn"
    summary = train(
        corpus["shards"],
        run,
        config(
            batch_size=8,
            max_steps=60,
            save_every=60,
            val_every=30,
            log_every=1,
            optim=dataclasses.replace(TrainConfig().optim, lr=5e-3),
        ),
        progress=False,
    )
    curve = losses(run)
    assert len(curve) == 60 and summary["accumulation"] == 1
    assert sum(curve[-10:]) / 10 < sum(curve[:10]) / 10 - 3  # about 9.9 -> 4.6
    vals = [json.loads(line)["val_loss"] for line in (run / "val.jsonl").read_text().splitlines()]
    assert len(vals) == 2 and set(vals[0]) == set(TASKS)
    assert (run / "loss.png").stat().st_size > 1000
    folder = checkpoint.latest(run)
    assert folder.name == "step-0000060" and load_model(folder).config == load_config("tiny")


def test_resume_is_exact(corpus):
    straight, halves = corpus["folder"] / "straight", corpus["folder"] / "halves"
    train(corpus["shards"], straight, config(), progress=False)
    train(corpus["shards"], halves, config(), stop_at=4, progress=False)
    summary = train(corpus["shards"], halves, config(), resume=True, progress=False)
    assert summary["resumed_from"] == 4
    assert losses(halves) == losses(straight)
    a, b = params(straight), params(halves)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert checkpoint.all_steps(halves) == [4, 8]


def test_no_test_face_is_ever_read(corpus, monkeypatch):
    opened = []
    real = shards.read_raw_samples_of  # every read of a shard goes through it

    def spy(tar_file):
        opened.append(Path(tar_file).parent.name)
        return real(tar_file)

    monkeypatch.setattr(shards, "read_raw_samples_of", spy)
    train(corpus["shards"], corpus["folder"] / "spy", config(max_steps=3, val_every=3), progress=False)
    assert set(opened) == {"train", "val"}


def _ddp_worker(rank: int, world: int, port: int, shards_dir: str, run: str, model: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    train(Path(shards_dir), Path(run), config(model=model, max_steps=4), progress=False)
    import torch.distributed as dist

    dist.destroy_process_group()


def test_two_process_ddp_matches_one_process(corpus):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ddp, single = corpus["folder"] / "ddp", corpus["folder"] / "single"
    mp.spawn(_ddp_worker, args=(2, port, str(corpus["shards"]), str(ddp), corpus["no_dropout"]), nprocs=2, join=True)
    summary = train(corpus["shards"], single, config(model=corpus["no_dropout"], max_steps=4), progress=False)
    assert summary["accumulation"] == 2
    a, b = params(ddp), params(single)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    assert losses(ddp) == pytest.approx(losses(single), abs=1e-4)


# ----------------------------------------------------------------------------- errors
def test_user_errors(corpus, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no train/shard"):
        train(empty, tmp_path / "r1", config(), progress=False)
    other = write_shards(tmp_path / "other", train_faces=8, codebook=512)
    with pytest.raises(UserError, match="VQGAN of 512 codes"):  # a config file is checked (a preset is fitted)
        train(other, tmp_path / "r2", config(model=corpus["no_dropout"]), progress=False)
    with pytest.raises(UserError, match="holds no checkpoint"):
        train(corpus["shards"], tmp_path / "r3", config(), resume=True, progress=False)
    run = tmp_path / "r4"
    train(corpus["shards"], run, config(max_steps=2, save_every=2), progress=False)
    with pytest.raises(UserError, match="already holds checkpoints"):
        train(corpus["shards"], run, config(max_steps=4), progress=False)
    whole = tmp_path / "whole.json"
    save_config(load_config("tiny").replace(numbers="whole"), whole)
    with pytest.raises(UserError, match="numbers"):
        train(corpus["shards"], run, config(model=str(whole), max_steps=4), resume=True, progress=False)
    with pytest.raises(UserError, match="micro-batch"):
        train(corpus["shards"], run, config(max_steps=4, micro_batch_size=4), resume=True, progress=False)
    with pytest.raises(UserError, match="multiple of 4"):
        train(corpus["shards"], tmp_path / "r5", config(micro_batch_size=6), progress=False)


def test_out_of_range_token_and_empty_shards_are_one_line_errors(tmp_path):
    from facetokens.shards import Face

    bad = tmp_path / "bad"
    folder = shards.split_dir(bad, "train")
    folder.mkdir(parents=True)
    texts = [
        {
            "dataset": "celeba",
            "kind": "attributes",
            "text": "celeba gender: male",
            "attributes": [{"key": "gender", "value": "male"}],
        },
        {"dataset": "celeba", "kind": "caption", "text": "a man", "attributes": None},
    ]
    shards.write_shard(
        folder, 0, [shards.sample(Face("celeba/1", "celeba", "/x", "x", None, "train", texts), [1500] * 16)], [], 0, 1
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "cli.py"),
            "train",
            "--shards",
            str(bad),
            "--out",
            str(tmp_path / "run"),
            "--config",
            "tiny",
            "--batch-size",
            "8",
            "--micro-batch-size",
            "8",
            "--max-steps",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "outside the codebook" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    empty = tmp_path / "empty"
    shards.split_dir(empty, "train").mkdir(parents=True)
    shards.write_shard(shards.split_dir(empty, "train"), 0, [], [], 0, 0)
    with pytest.raises(UserError, match="no train face"):
        train(empty, tmp_path / "run2", config(), progress=False)


def test_a_face_whose_text_cannot_be_tokenized_is_skipped_not_fatal(tmp_path):
    from train_fixture import face

    faces = [face(k, "train", captions=1) for k in range(12)]
    faces[0][0].texts[-1]["text"] = "a smiling man \U0001f642"  # BERT's vocabulary has no emoji: [UNK]
    folder = shards.split_dir(tmp_path, "train")
    folder.mkdir(parents=True)
    shards.check_plan(tmp_path, {"format": shards.FORMAT_VERSION, "vqgan": {"config": {"n_embed": 1024}}})
    shards.write_shard(folder, 0, [shards.sample(f, c) for f, c in faces], [], 0, len(faces))
    stream = TrainStream(tmp_path, layouts(), DATA, 8, range(1), 1, seed=1)
    for _ in range(6):
        assert torch.bincount(stream.next_batch(0)["tasks"], minlength=4).tolist() == [2, 2, 2, 2]
    assert stream.streams[0].skipped >= 1


def test_training_rows_open_with_the_texts_own_head():
    from trainer.data import task_choices

    meta = {
        "texts": [
            {
                "dataset": "imdb_wiki",
                "kind": "attributes",
                "text": "wiki age: 10; gender: female",
                "attributes": [{"key": "age", "value": "10"}, {"key": "gender", "value": "female"}],
            }
        ]
    }
    assert task_choices("face_to_attributes", meta)[0][0] == "wiki"  # what evaluate and generate prompt with


def test_a_fine_tuning_run_resumes_with_the_config_its_weights_brought(corpus):
    base = corpus["folder"] / "base"
    train(corpus["shards"], base, config(max_steps=2, save_every=2), progress=False)
    tuned = corpus["folder"] / "tuned"
    fine_tune = config(model="paper", max_steps=4, save_every=2)  # the default --config; the weights are tiny
    train(corpus["shards"], tuned, fine_tune, init_from=checkpoint.latest(base), stop_at=2, progress=False)
    saved = TrainConfig.from_dict(checkpoint.load_state(checkpoint.latest(tuned))[2])
    summary = train(corpus["shards"], tuned, saved, resume=True, progress=False)  # what `--resume` rebuilds
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
