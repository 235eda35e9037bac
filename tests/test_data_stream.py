"""The training stream on uneven shards (issue 18.1), one dataset or no captions (19.5), damaged shards (18.4)."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cli
from common.errors import UserError
from facetokens import shards
from facetokens.shards import Face
from trainer import checkpoint
from trainer.config import load_config
from trainer.data import TASKS, DataConfig, TrainStream, ValidationSet, tasks_with_data
from trainer.sequences import Layouts
from trainer.text import TextTokenizer
from trainer.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
DATA = DataConfig(shuffle_buffer=3, pool=2, val_faces=4)
TINY = load_config("tiny")
LAYOUTS = Layouts(TINY, TextTokenizer.for_config(TINY))
CAPTION = {"dataset": "ffhq_text", "kind": "caption", "text": "a face with a smile", "attributes": None}


def attributes(dataset: str = "fairface", value: str = "male") -> dict:
    return {
        "dataset": dataset,
        "kind": "attributes",
        "text": f"{dataset} gender: {value}",
        "attributes": [{"key": "gender", "value": value}],
    }


def write_split(out: Path, split: str, spec: list[list[list[dict]]]) -> Path:
    """One shard per entry of `spec`; each face is the list of its texts. Faces are numbered across shards."""
    folder = shards.split_dir(out, split)
    folder.mkdir(parents=True, exist_ok=True)
    k = 0
    for index, faces in enumerate(spec):
        samples = []
        for texts in faces:
            face = Face(f"{split}/{k:04d}", texts[0]["dataset"] if texts else "none", "/x", "x.jpg", None, split, texts)
            samples.append(shards.sample(face, (np.arange(16) * 13 + k) % 1024))
            k += 1
        shards.write_shard(folder, index, samples, [], 0, len(samples))
    return out


def stream(out: Path, total: int, config: DataConfig = DATA, micro: int = 4) -> TrainStream:
    return TrainStream(out, LAYOUTS, config, micro, range(total), total, seed=5)


# ----------------------------------------------------------------------------- 18.1 every task in every stream
UNEVEN = {
    "captions in one face of the first shard": [
        [[CAPTION, attributes()]] + [[attributes()]] * 4,
        [[attributes()]],
        [[attributes()]] * 9,
    ],
    "captions only in the last shard, attributes only in the first": [[[attributes()]] * 3, [[]] * 2, [[CAPTION]] * 2],
    "one shard, one face of each": [[[CAPTION], [attributes()]]],
    "more streams than shards, shards of one face": [[[CAPTION, attributes()]], [[attributes()]]],
}


@pytest.mark.parametrize("name", UNEVEN)
@pytest.mark.parametrize("total", [1, 2, 3])
def test_every_stream_serves_every_task_on_uneven_shards(tmp_path, name, total):
    out = write_split(tmp_path, "train", UNEVEN[name])
    # a buffer of 40 makes each reader go round its few faces many times (the old stream gave up on 2 and 3 streams)
    s = stream(out, total, DataConfig(shuffle_buffer=40, pool=2))
    for _ in range(6):
        for k in range(total):
            assert torch.bincount(s.next_batch(k)["tasks"], minlength=4).tolist() == [1, 1, 1, 1]


def test_streams_share_a_shard_of_few_caption_faces_without_overlap(tmp_path):
    faces = [[CAPTION, {**CAPTION, "text": f"face number {k}"}] for k in range(4)]
    out = write_split(tmp_path, "train", [faces, [[attributes()]] * 6])
    s = stream(out, 2)
    readers = [s.streams[v].readers["face_to_caption"] for v in (0, 1)]
    assert readers[0].units == [(str(shards.split_dir(out, "train") / "shard-000000.tar"), part, 2) for part in (0, 1)]
    for position in range(6):  # at every position the two streams read the two halves of the one caption shard
        assert {readers[0].unit_at(position), readers[1].unit_at(position)} == set(readers[0].units)
    seen = {0: set(), 1: set()}
    for k in (0, 1):
        readers[k].capacity = 1
        seen[k] = {int(readers[k].read().codes[0]) for _ in range(2)}  # code 0 is the face's number
    assert seen[0] | seen[1] == {0, 1, 2, 3} and not seen[0] & seen[1]


def test_accumulation_trains_on_captions_in_one_shard(tmp_path):
    out = write_split(tmp_path, "train", UNEVEN["captions in one face of the first shard"])
    config = TrainConfig(
        model="tiny", batch_size=8, micro_batch_size=4, max_steps=2, save_every=2, val_every=2, data=DATA
    )
    assert train(out, tmp_path / "run", config, progress=False)["accumulation"] == 2


# ----------------------------------------------------------------------------- 19.5 one dataset, no captions
def test_a_corpus_without_captions_trains_the_attribute_tasks_and_says_why(tmp_path, caplog):
    out = write_split(tmp_path, "train", [[[attributes()]] * 3, [[attributes(value="female")]] * 2])
    write_split(tmp_path, "val", [[[attributes()]] * 2])
    with caplog.at_level(logging.WARNING):
        s = stream(out, 2)
    assert s.tasks == ["attributes_to_face", "face_to_attributes"]
    assert "the caption_to_face task is off: no train face in 2 shard(s) has a caption" in caplog.text
    assert torch.bincount(s.next_batch(1)["tasks"], minlength=4).tolist() == [0, 0, 2, 2]
    assert tasks_with_data(out) == {
        "caption_to_face": 0,
        "face_to_caption": 0,
        "attributes_to_face": 5,
        "face_to_attributes": 5,
    }
    config = TrainConfig(
        model="tiny", batch_size=4, micro_batch_size=4, max_steps=2, save_every=2, val_every=2, data=DATA
    )
    train(out, tmp_path / "run", config, progress=False)
    val = [json.loads(line)["val_loss"] for line in (tmp_path / "run" / "val.jsonl").read_text().splitlines()]
    assert set(val[0]) == {"attributes_to_face", "face_to_attributes"}


def test_captions_only_train_the_caption_tasks(tmp_path):
    out = write_split(tmp_path, "train", [[[CAPTION]] * 3])
    assert torch.bincount(stream(out, 1).next_batch(0)["tasks"], minlength=4).tolist() == [2, 2, 0, 0]


def test_datasets_chooses_the_texts_and_names_what_is_there(tmp_path):
    spec = [
        [[attributes("cacd"), CAPTION], [attributes("celeba")], [attributes("cacd")]],
        [[CAPTION, attributes("afad")]],
    ]
    out = write_split(tmp_path, "train", spec)
    write_split(tmp_path, "val", [[[attributes("celeba")], [attributes("cacd")]]])
    cacd = DataConfig(shuffle_buffer=3, pool=2, val_faces=4, datasets=("cacd",))
    s = stream(out, 2, cacd)
    assert s.tasks == ["attributes_to_face", "face_to_attributes"]
    served = set()
    for k in (0, 1, 0, 1):
        batch = s.next_batch(k)
        rows = batch["tasks"] == TASKS.index("face_to_attributes")
        served |= {int(t) - 30522 for t in batch["tokens"][rows][:, 4]}  # [CLS] to attributes [SEP], code 0 = face
    assert served == {0, 2}  # the faces with a cacd text
    assert tasks_with_data(out, datasets=("cacd",))["face_to_attributes"] == 2
    validation = ValidationSet(out, LAYOUTS, cacd, seed=0)
    assert len(validation.rows["face_to_attributes"]) == 1 and not validation.rows["face_to_caption"]
    with pytest.raises(
        UserError,
        match=r"^--datasets celeba_hq, imdb: not in the train shards of .*, whose faces have "
        r"texts of afad, cacd, celeba, ffhq_text$",
    ):
        stream(out, 1, DataConfig(datasets=("imdb", "celeba_hq", "cacd")))
    with pytest.raises(UserError, match=r"no train face in 1 shard\(s\) of .* has a caption or attributes: nothing to"):
        stream(write_split(tmp_path / "none", "train", [[[]]]), 1)


def test_a_run_resumes_only_with_its_datasets(tmp_path):
    out = write_split(tmp_path, "train", [[[attributes("cacd"), CAPTION], [attributes("celeba")]] * 2])
    config = TrainConfig(
        model="tiny",
        batch_size=4,
        micro_batch_size=4,
        max_steps=2,
        save_every=1,
        val_every=9,
        data=DataConfig(shuffle_buffer=2, pool=1, datasets=("cacd",)),
    )
    train(out, tmp_path / "run", config, stop_at=1, progress=False)
    other = TrainConfig(**{**config.__dict__, "data": DataConfig(shuffle_buffer=2, pool=1, datasets=("celeba",))})
    with pytest.raises(UserError, match=r"--datasets celeba cannot change on --resume \(the run has cacd and its data"):
        train(out, tmp_path / "run", other, resume=True, progress=False)
    with pytest.raises(UserError, match=r"--datasets cacd,celeba cannot change on --resume"):
        train(out, tmp_path / "run", resume=True, datasets="cacd,celeba", progress=False)
    assert (
        train(out, tmp_path / "run", resume=True, datasets="cacd", skip_bad_shards=True, progress=False)["steps"] == 2
    )
    # the stream itself refuses a state saved on other datasets (a run folder edited by hand)
    streamed = TrainStream(
        out,
        Layouts(load_config("tiny"), TextTokenizer.for_config(load_config("tiny"))),
        other.data,
        4,
        range(1),
        1,
        config.seed,
    )
    saved = torch.load(checkpoint.latest(tmp_path / "run") / checkpoint.STATE_FILE, weights_only=True)["data"]
    with pytest.raises(UserError, match="trained tasks attributes_to_face, face_to_attributes on datasets cacd"):
        streamed.load_state(saved["streams"])


# ----------------------------------------------------------------------------- 18.4 damaged shards
def _cut(data: bytes, at: int) -> bytes:
    return data[:at]


def _members(tar: Path) -> list[tuple[int, int]]:
    """(header offset, size) of each member."""
    import tarfile

    with tarfile.open(tar) as t:
        return [(m.offset, m.size) for m in t]


def _rewrite_face_codes(folder: Path, codes: int) -> None:
    """Shard 1 rewritten by a foreign writer: its second face with `codes` codes; the stats keep saying 16."""
    from webdataset import TarWriter

    stats = json.loads((folder / "shard-000001.stats.json").read_text())
    faces = list(shards.read_samples_of(folder / "shard-000001.tar"))
    with open(folder / "shard-000001.tar", "wb") as stream_:
        writer = TarWriter(stream_, encoder=False, mtime=0)
        for n, (meta, c) in enumerate(faces):
            face = Face(meta["image_id"], meta["dataset"], "/x", "x.jpg", None, "train", meta["texts"])
            writer.write(shards.sample(face, c[:codes] if n == 1 else c))
        writer.close()
    stats["bytes"] = (folder / "shard-000001.tar").stat().st_size
    (folder / "shard-000001.stats.json").write_text(json.dumps(stats))


def _flip_in_json(tar: Path) -> None:
    data = bytearray(tar.read_bytes())
    at = data.index(b'"texts"')
    data[at] = ord("{")
    tar.write_bytes(bytes(data))


DAMAGE = {  # name: (what to do to SHARDS/train/shard-000001.*, the message)
    "zero-byte tar": (lambda f: (f / "shard-000001.tar").write_bytes(b""), "0 bytes where its writer recorded"),
    "cut at a member boundary": (
        lambda f: (f / "shard-000001.tar").write_bytes(
            _cut((f / "shard-000001.tar").read_bytes(), _members(f / "shard-000001.tar")[2][0])
        ),
        "bytes where its writer recorded",
    ),
    "cut inside a header": (
        lambda f: (f / "shard-000001.tar").write_bytes(
            _cut((f / "shard-000001.tar").read_bytes(), _members(f / "shard-000001.tar")[3][0] + 100)
        ),
        "bytes where its writer recorded",
    ),
    "a face with 15 codes": (lambda f: _rewrite_face_codes(f, 15), "face 2 has 15 codes, not 16"),
    "fewer faces than recorded": (
        lambda f: (f / "shard-000001.stats.json").write_text(
            (f / "shard-000001.stats.json").read_text().replace('"faces": 3', '"faces": 4')
        ),
        "3 whole face(s) where its writer recorded 4",
    ),
    "half-written stats": (
        lambda f: (f / "shard-000001.stats.json").write_text('{"shard": "shard-000001", "fa'),
        "not a readable shard stats",
    ),
    "no stats": (lambda f: (f / "shard-000001.stats.json").unlink(), "no stats file beside it"),
    "a face's JSON changed": (lambda f: _flip_in_json(f / "shard-000001.tar"), "a face's JSON is unreadable"),
}


def damaged(tmp_path: Path, name: str) -> Path:
    out = write_split(tmp_path, "train", [[[CAPTION, attributes()]] * 3] * 3)
    DAMAGE[name][0](shards.split_dir(out, "train"))
    return out


@pytest.mark.parametrize("name", DAMAGE)
def test_a_damaged_shard_is_named_and_refused_or_skipped_and_counted(tmp_path, name):
    out = damaged(tmp_path, name)
    tar = shards.split_dir(out, "train") / "shard-000001.tar"
    with pytest.raises(UserError) as refused:
        stream(out, 2)
    message = str(refused.value)
    assert message.startswith(f"{tar}: damaged shard: ") and DAMAGE[name][1] in message and "\n" not in message
    assert "--skip-bad-shards" in message
    s = stream(out, 2, DataConfig(shuffle_buffer=3, pool=2, skip_bad_shards=True))
    assert len(s.survey.skipped) == 1 and len(s.survey.urls) == 2
    assert torch.bincount(s.next_batch(1)["tasks"], minlength=4).tolist() == [1, 1, 1, 1]
    with pytest.raises(UserError, match="damaged shard"):  # evaluate's reader refuses it too, or skips and counts it
        list(shards.read_samples(out, "train"))
    skipped = []
    assert len(list(shards.read_samples(out, "train", skip_bad=True, skipped=skipped))) == 6 and len(skipped) == 1


def test_half_written_index_and_plan_are_one_line(tmp_path):
    out = write_split(tmp_path, "train", [[[CAPTION, attributes()]] * 3])
    (out / shards.INDEX_FILE).write_text('{"format": 2, "shar')
    with pytest.raises(
        UserError, match=r"index.json: not a readable shard index \(.*\); half-written\? re-run tokenize"
    ):
        stream(out, 1)
    (out / shards.INDEX_FILE).unlink()
    (out / shards.PLAN_FILE).write_text("[1, 2")
    with pytest.raises(UserError, match="plan.json: not a readable shard plan"):
        stream(out, 1)


def test_index_names_a_missing_shard(tmp_path):
    out = write_split(tmp_path, "train", [[[CAPTION, attributes()]] * 3] * 2)
    (out / shards.INDEX_FILE).write_text(
        json.dumps({"shards": [{"split": "train", "tar": f"train/shard-00000{i}.tar"} for i in range(3)]})
    )
    with pytest.raises(UserError, match=r"shard-000002.tar: listed in .*index.json but missing \(1 missing in all\)"):
        stream(out, 1)


def test_the_train_command_refuses_a_damaged_shard_in_one_line(tmp_path, caplog):
    out = damaged(tmp_path, "cut at a member boundary")
    command = ["train", "--shards", str(out), "--out", str(tmp_path / "run"), "--config", "tiny"]
    command += ["--batch-size", "4", "--micro-batch-size", "4", "--max-steps", "1"]
    proc = CliRunner().invoke(cli.main, command, catch_exceptions=False)
    assert proc.exit_code == 2 and proc.stderr.startswith("error: ") and "damaged shard" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = CliRunner().invoke(cli.main, command + ["--skip-bad-shards"], catch_exceptions=False)
    assert proc.exit_code == 0 and "1 damaged train shard(s) skipped" in caplog.text, proc.stderr


def _ddp_worker(rank: int, world: int, port: int, shards_dir: str, run: str) -> None:
    import os

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    config = TrainConfig(
        model="tiny", batch_size=8, micro_batch_size=4, max_steps=2, save_every=2, val_every=2, data=DATA
    )
    train(Path(shards_dir), Path(run), config, progress=False)
    import torch.distributed as dist

    dist.destroy_process_group()


def test_two_gloo_processes_train_on_captions_in_one_shard(tmp_path):
    import socket

    import torch.multiprocessing as mp

    out = write_split(tmp_path, "train", UNEVEN["captions in one face of the first shard"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(out), str(tmp_path / "run")), nprocs=2, join=True)
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2
