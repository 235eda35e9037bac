"""The training data stream: train shards -> faces -> the four tasks, balanced in every micro-batch.

    stream = TrainStream(shards_dir, layouts, DataConfig(), micro_batch=24, streams=range(0, 8), total_streams=8)
    batch = stream.next_batch(0)      # tokens, segments, labels [B, L], tasks [B], padding fraction

How it is organised (all of it deterministic from the seed):
  * The run's global batch is cut into `total_streams` = global batch / micro-batch *virtual streams*;
    process r of W owns streams [r * A, (r + 1) * A) (A = accumulation steps) and takes its k-th
    micro-batch of a step from its k-th stream. One process accumulating 2 micro-batches and two
    processes taking one each therefore see the same data, and a checkpoint can be resumed on another
    number of processes as long as the global batch and micro-batch stay.
  * Stream v reads shard positions v, v + V, v + 2V, ... of an endless sequence of epochs, each epoch
    a seeded permutation of `SHARDS/train/`: no two streams read the same shard in a window of V
    positions, and every stream has work even when the shard count does not divide (or is smaller
    than V), so no rank waits for another.
  * Each of the four tasks has its own reader and shuffle buffer over the faces that can serve it
    (caption tasks: faces with a caption; attribute tasks: faces with attributes), so every
    micro-batch holds micro/4 rows of each task although far fewer faces have captions.
  * Length-aware batching: `pool` micro-batches' worth of rows per task are built, each task's rows
    sorted by length and dealt out in order, so rows of similar length share a batch; the batches of
    the pool are then shuffled.
  * `state()` returns everything needed to continue exactly (shard position and offset, buffers,
    pending batches, RNG states); `load_state()` restores it.

Only `SHARDS/train/` is read here; `ValidationSet` reads `SHARDS/val/`; `test/` is never opened.
Shards are read by `facetokens.shards` (the one reader of the format, WebDataset tar files).
"""
from __future__ import annotations

import itertools
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from facetokens import shards
from trainer.config import ModelConfig
from trainer.sequences import Layouts, Sequence, UnfitText, attribute_head, pad_batch

log = logging.getLogger(__name__)
SKIPS_LOGGED = 10  # the first faces skipped are named in the log; all are counted

TASKS = ("caption_to_face", "face_to_caption", "attributes_to_face", "face_to_attributes")
CAPTION_TASKS = ("caption_to_face", "face_to_caption")
STATE_VERSION = 1


@dataclass(frozen=True)
class DataConfig:
    shuffle_buffer: int = 1000  # faces per task and stream in the shuffle buffer
    pool: int = 16  # micro-batches built together for length-aware batching
    val_faces: int = 256  # val faces per task in the validation set (fixed, the first ones of val/)


# ----------------------------------------------------------------------------- checks on the shards
def check_shards(shards_dir: Path, config: ModelConfig) -> list[str]:
    """The train shard files, after checking they exist and were made for this model's codebook."""
    shards_dir = Path(shards_dir)
    if not shards_dir.is_dir():
        raise UserError(f"--shards {shards_dir}: no such folder; run tokenize-images first")
    urls = shards.tar_urls(shards_dir, "train")
    if not urls:
        raise UserError(f"--shards {shards_dir}: no train/shard-*.tar files; run tokenize-images first")
    plan_file = shards_dir / shards.PLAN_FILE
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text(encoding="utf-8"))
        vqgan = (plan.get("vqgan") or {}).get("config") or {}
        codebook = vqgan.get("n_embed")
        if codebook is not None and codebook != config.image_vocab_size:
            raise UserError(f"--shards {shards_dir}: made with a VQGAN of {codebook} codes; the model's image vocabulary "
                            f"has {config.image_vocab_size} (image_vocab_size)")
    index_file = shards_dir / shards.INDEX_FILE
    if index_file.is_file():
        index = json.loads(index_file.read_text(encoding="utf-8"))
        if (index.get("splits") or {}).get("train", {}).get("faces") == 0:
            raise UserError(f"--shards {shards_dir}: the train shards hold no faces")
    return urls


# ----------------------------------------------------------------------------- one task's reader and buffer
@dataclass
class Item:
    image_id: str
    codes: np.ndarray  # int64 [image_tokens]
    choices: list  # captions (str) or attribute texts (dataset, pairs)


def task_choices(task: str, meta: dict) -> list:
    """What a face offers a task: its captions, or its attribute texts as (head, pairs); the head is the text's
    own opening words (`celeba`, `wiki`), the same that evaluation and generation prompt with."""
    if task in CAPTION_TASKS:
        return [t["text"] for t in meta["texts"] if t["kind"] == "caption" and t["text"]]
    return [(attribute_head(t), t["attributes"]) for t in meta["texts"] if t["kind"] == "attributes" and t["attributes"]]


def may_have_caption(meta: bytes) -> bool:
    """False only when the face's JSON cannot hold a caption text: no `caption`, plain or \\u-escaped, anywhere in it.

    Far fewer faces have captions than attributes; the caption tasks skip parsing the others' JSON.
    """
    return b"caption" in meta or b"\\u" in meta


class TaskReader:
    """Faces that can serve one task, from one virtual stream's shard positions, through a shuffle buffer."""

    def __init__(self, task: str, urls: list[str], stream: int, total_streams: int, seed: int, capacity: int):
        self.task, self.urls, self.stream, self.total = task, urls, stream, total_streams
        self.seed, self.capacity = seed, capacity
        self.rng = random.Random(f"{seed}/{task}/{stream}/buffer")
        self.position = 0  # shard positions of this stream consumed
        self.offset = 0  # samples of the current shard consumed
        self.buffer: list[Item] = []
        self._samples = None
        self._order_epoch, self._order = -1, []

    def shard_at(self, position: int) -> str:
        """Shard of this stream's `position`-th turn: global slot stream + position * total, in epoch order."""
        slot = self.stream + position * self.total
        epoch, k = divmod(slot, len(self.urls))
        if epoch != self._order_epoch:
            self._order = list(range(len(self.urls)))
            random.Random(f"{self.seed}/{self.task}/epoch{epoch}").shuffle(self._order)
            self._order_epoch = epoch
        return self.urls[self._order[k]]

    def read(self) -> Item:
        """The next face of the stream that can serve this task."""
        opened_without_face = 0
        while True:
            if self._samples is None:
                url = self.shard_at(self.position)
                self._samples = itertools.islice(shards.read_raw_samples_of(Path(url)), self.offset, None)
            for raw_meta, raw_codes in self._samples:
                self.offset += 1
                if self.task in CAPTION_TASKS and not may_have_caption(raw_meta):
                    continue
                meta = shards.decode_meta(raw_meta)
                choices = task_choices(self.task, meta)
                if choices:
                    return Item(meta["image_id"], shards.decode_codes(raw_codes), choices)
            self._samples, self.position, self.offset = None, self.position + 1, 0
            opened_without_face += 1
            if opened_without_face > 2 * len(self.urls) + 2:
                need = "a caption" if "caption" in self.task else "attributes"
                raise UserError(f"no train face in {len(self.urls)} shard(s) has {need}: the {self.task} task has no data")

    def next(self) -> Item:
        while len(self.buffer) < self.capacity:
            self.buffer.append(self.read())
        i = self.rng.randrange(len(self.buffer))
        item = self.buffer[i]
        self.buffer[i] = self.buffer[-1]
        self.buffer.pop()
        return item

    def state(self) -> dict:
        codes = torch.from_numpy(np.stack([b.codes for b in self.buffer]).astype(np.int16)) if self.buffer else None
        return {"position": self.position, "offset": self.offset, "rng": _rng_state(self.rng),
                "ids": [b.image_id for b in self.buffer], "codes": codes,
                "choices": json.dumps([b.choices for b in self.buffer], ensure_ascii=False)}

    def load_state(self, state: dict) -> None:
        self.position, self.offset = state["position"], state["offset"]
        self.rng.setstate(_rng_tuple(state["rng"]))
        choices = json.loads(state["choices"])
        codes = state["codes"].numpy().astype(np.int64) if state["codes"] is not None else []
        self.buffer = [Item(i, c, [tuple(x) if isinstance(x, list) else x for x in ch]) for i, c, ch in zip(state["ids"], codes, choices)]
        self._samples = None


# ----------------------------------------------------------------------------- one virtual stream
class MicroBatches:
    """Balanced, length-sorted micro-batches of one virtual stream."""

    def __init__(self, urls, layouts: Layouts, config: DataConfig, micro_batch: int, stream: int, total_streams: int, seed: int):
        self.layouts, self.config, self.micro_batch = layouts, config, micro_batch
        self.readers = {t: TaskReader(t, urls, stream, total_streams, seed, config.shuffle_buffer) for t in TASKS}
        self.rng = random.Random(f"{seed}/{stream}/batches")
        self.pending: list[list[tuple[int, Sequence]]] = []
        self.skipped = 0  # faces whose text cannot become a row (characters outside the vocabulary, ...)

    def next(self) -> list[tuple[int, Sequence]]:
        if not self.pending:
            self.pending = self._pool()
        return self.pending.pop()

    def _pool(self) -> list[list[tuple[int, Sequence]]]:
        per_task = self.micro_batch // len(TASKS)
        batches = [[] for _ in range(self.config.pool)]
        for t, task in enumerate(TASKS):
            rows = [self._next_row(task) for _ in range(per_task * self.config.pool)]
            rows.sort(key=lambda s: len(s.tokens))
            for b in range(self.config.pool):
                batches[b].extend((t, s) for s in rows[b * per_task:(b + 1) * per_task])
        self.rng.shuffle(batches)
        return batches

    def _next_row(self, task: str) -> Sequence:
        """The next face's row; a face whose text cannot be tokenized or fit is skipped (and counted), not fatal."""
        while True:
            item = self.readers[task].next()
            try:
                return build(task, item, self.layouts, self.rng)
            except UnfitText as e:
                self.skipped += 1
                if self.skipped <= SKIPS_LOGGED:
                    log.warning("skipped: %s", e)

    def state(self) -> dict:
        return {"rng": _rng_state(self.rng), "readers": {t: r.state() for t, r in self.readers.items()},
                "pending": [[(t, s.tokens, s.segments, s.labels) for t, s in b] for b in self.pending]}

    def load_state(self, state: dict) -> None:
        self.rng.setstate(_rng_tuple(state["rng"]))
        for t, r in self.readers.items():
            r.load_state(state["readers"][t])
        self.pending = [[(t, Sequence(list(a), list(b), list(c))) for t, a, b, c in batch] for batch in state["pending"]]


def build(task: str, item: Item, layouts: Layouts, rng: random.Random) -> Sequence:
    choice = item.choices[rng.randrange(len(item.choices))] if len(item.choices) > 1 else item.choices[0]
    face = f"train face {item.image_id}"
    if task == "caption_to_face":
        return layouts.caption_to_face(choice, item.codes, face)
    if task == "face_to_caption":
        return layouts.face_to_caption(item.codes, choice, face)
    dataset, pairs = choice
    if task == "attributes_to_face":
        return layouts.attributes_to_face(dataset, pairs, item.codes, rng, face)
    return layouts.face_to_attributes(item.codes, dataset, pairs, rng, face)


def collate(rows: list[tuple[int, Sequence]]) -> dict:
    batch = pad_batch([s for _, s in rows])
    batch["tasks"] = torch.tensor([t for t, _ in rows])
    real = sum(len(s.tokens) for _, s in rows)
    batch["real_tokens"] = real
    batch["padding"] = 1.0 - real / batch["tokens"].numel()
    return batch


# ----------------------------------------------------------------------------- this process's streams
class TrainStream:
    """The virtual streams `streams` (of `total_streams`) that this process owns; micro-batch k comes from the k-th."""

    def __init__(self, shards_dir: Path, layouts: Layouts, config: DataConfig, micro_batch: int, streams: range,
                 total_streams: int, seed: int):
        if micro_batch % len(TASKS):
            raise UserError(f"the micro-batch ({micro_batch}) must be a multiple of {len(TASKS)} to balance the tasks")
        if config.pool < 1 or config.shuffle_buffer < 1:
            raise UserError("the data pool and shuffle buffer must be >= 1")
        urls = check_shards(shards_dir, layouts.config)
        self.total_streams, self.seed, self.micro_batch = total_streams, seed, micro_batch
        self.streams = {v: MicroBatches(urls, layouts, config, micro_batch, v, total_streams, seed) for v in streams}

    def next_batch(self, k: int) -> dict:
        return collate(self.streams[list(self.streams)[k]].next())

    def state(self) -> dict:
        return {"version": STATE_VERSION, "total_streams": self.total_streams, "micro_batch": self.micro_batch,
                "seed": self.seed, "streams": {v: s.state() for v, s in self.streams.items()}}

    def load_state(self, states: dict) -> None:
        """`states`: stream number -> state, from the checkpoint (which may hold other processes' streams)."""
        for v, s in self.streams.items():
            s.load_state(states[v])


def check_state(state: dict, total_streams: int, micro_batch: int, seed: int) -> None:
    if state.get("version") != STATE_VERSION:
        raise UserError(f"the checkpoint's data-stream state has version {state.get('version')}; this code reads {STATE_VERSION}")
    if (state["total_streams"], state["micro_batch"], state["seed"]) != (total_streams, micro_batch, seed):
        raise UserError(f"the checkpoint streams data as {state['total_streams']} streams of micro-batch {state['micro_batch']} "
                        f"(seed {state['seed']}); this run would use {total_streams} of {micro_batch} (seed {seed}): resume with "
                        "the same global batch and micro-batch (any number of processes that divides them), or start a new "
                        "run with --init-from")


# ----------------------------------------------------------------------------- validation
class ValidationSet:
    """A fixed set of rows per task from the first faces of `SHARDS/val/` (seeded choices), in batches."""

    def __init__(self, shards_dir: Path, layouts: Layouts, config: DataConfig, seed: int):
        self.rows: dict[str, list[Sequence]] = {t: [] for t in TASKS}
        rng = random.Random(f"{seed}/val")
        for meta, codes in shards.read_samples(Path(shards_dir), "val"):
            for task in TASKS:
                choices = task_choices(task, meta)
                if choices and len(self.rows[task]) < config.val_faces:
                    try:
                        self.rows[task].append(build(task, Item(meta["image_id"], codes, choices), layouts, rng))
                    except UnfitText as e:
                        log.warning("validation: skipped %s", e)
            if all(len(r) >= config.val_faces for r in self.rows.values()):
                break
        if not any(self.rows.values()):
            log.warning("%s: no val faces; validation is skipped", shards_dir)

    def __bool__(self) -> bool:
        return any(self.rows.values())

    def batches(self, task: str, batch_size: int, rank: int = 0, world: int = 1):
        mine = self.rows[task][rank::world]
        for start in range(0, len(mine), batch_size):
            yield pad_batch(mine[start:start + batch_size])


def _rng_state(rng: random.Random):
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_tuple(state) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
