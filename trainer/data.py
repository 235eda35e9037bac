"""The training data stream: train shards -> faces -> the four tasks, balanced in every micro-batch.

    stream = TrainStream(shards_dir, layouts, DataConfig(), micro_batch=24, streams=range(0, 8), total_streams=8)
    batch = stream.next_batch(0)      # tokens, segments, labels [B, L], tasks [B], padding fraction

How it is organised (all of it deterministic from the seed):
  * The run's global batch is cut into `total_streams` = global batch / micro-batch *virtual streams*;
    process r of W owns streams [r * A, (r + 1) * A) (A = accumulation steps) and takes its k-th
    micro-batch of a step from its k-th stream. One process accumulating 2 micro-batches and two
    processes taking one each therefore see the same data, and a checkpoint can be resumed on another
    number of processes as long as the global batch and micro-batch stay.
  * Before anything is read for training, every train shard is read once and checked against what its
    writer recorded (`survey`): a damaged shard is refused, or left out and counted (`skip_bad_shards`),
    and each task learns which shards hold faces that can serve it (caption tasks: a caption; attribute
    tasks: attributes; only texts of `datasets` when given). A task no shard can serve is off (logged,
    with the reason); the others share every micro-batch equally.
  * Each task reads *units*: the shards that hold its faces, each cut into parts (part j of p: that
    shard's task faces j, j + p, ...) so that there are at least V units where the faces allow. Stream v
    reads unit positions v, v + V, v + 2V, ... of an endless sequence of epochs, each a seeded
    permutation of the task's units: no two streams read the same unit in a window of V positions, and
    every stream of every task has data whenever any shard has some, for any V (processes x accumulation).
  * Each task has its own reader and shuffle buffer, so every micro-batch holds micro / (tasks on) rows
    of each task although far fewer faces have captions.
  * Length-aware batching: `pool` micro-batches' worth of rows per task are built, each task's rows
    sorted by length and dealt out in order, so rows of similar length share a batch; the batches of
    the pool are then shuffled.
  * `state()` returns everything needed to continue exactly (shard position and offset, buffers,
    pending batches, RNG states); `load_state()` restores it.

Only `SHARDS/train/` is read here; `ValidationSet` reads `SHARDS/val/`; `test/` is never opened.
Shards are read by `facetokens.shards` (the one reader of the format, WebDataset tar files);
`fit_to_shards` holds a model config to the geometry the shards' VQGAN recorded.
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
STATE_VERSION = 2  # 2: units of shard parts, tasks that can be off


@dataclass(frozen=True)
class DataConfig:
    shuffle_buffer: int = 1000  # faces per task and stream in the shuffle buffer
    pool: int = 16  # micro-batches built together for length-aware batching
    val_faces: int = 256  # val faces per task in the validation set (fixed, the first ones of val/)
    datasets: tuple[str, ...] = ()  # only the texts of these datasets (`--datasets cacd,celeba`); empty: all
    skip_bad_shards: bool = False  # leave damaged shards out (named in the log, counted) instead of refusing them

    def __post_init__(self):
        names = self.datasets.split(",") if isinstance(self.datasets, str) else list(self.datasets or ())
        if not all(isinstance(n, str) for n in names):
            raise UserError(f"datasets: expected dataset names (cacd,celeba), got {self.datasets!r}")
        object.__setattr__(self, "datasets", tuple(n.strip() for n in names if n.strip()))


# ----------------------------------------------------------------------------- checks on the shards
MIN_TEXT_ROOM = 8  # positions beside the image tokens: [CLS], a prompt, [SEP]s and at least a word


def check_shards(shards_dir: Path, config: ModelConfig) -> list[str]:
    """The train shard files, after checking the set is whole and was made for this model's geometry."""
    shards_dir = Path(shards_dir)
    if not shards_dir.is_dir():
        raise UserError(f"--shards {shards_dir}: no such folder; run tokenize-images first")
    urls = shards.check_complete(shards_dir, "train")
    if not urls:
        raise UserError(f"--shards {shards_dir}: no train/shard-*.tar files; run tokenize-images first")
    fit_to_shards(config, shards_dir)
    index = shards.read_index(shards_dir)
    if index is not None and (index.get("splits") or {}).get("train", {}).get("faces") == 0:
        raise UserError(f"--shards {shards_dir}: the train shards hold no faces")
    return urls


def fit_to_shards(config: ModelConfig, shards_dir: Path, derive: bool = False) -> ModelConfig:
    """The model config held to the geometry the shards recorded (codes per face, codebook size).

    derive=True (a preset): image_tokens, image_vocab_size and seq_length (the same text room beside the image)
    come from the shards. derive=False (a config file, a checkpoint): a mismatch is one line naming both.
    """
    found = shards.geometry(shards_dir) or {}
    codes, codebook = found.get("codes_per_face"), found.get("codebook_size")
    if derive:
        changes = {
            "image_vocab_size": codebook or config.image_vocab_size,
            "image_tokens": codes or config.image_tokens,
        }
        changes["seq_length"] = changes["image_tokens"] + config.seq_length - config.image_tokens
        changes["max_positions"] = max(config.max_positions, changes["seq_length"])
        if any(getattr(config, k) != v for k, v in changes.items()):
            log.info("model config fitted to the shards' VQGAN: %s", ", ".join(f"{k} {v}" for k, v in changes.items()))
        return config.replace(**changes)
    if (codebook or config.image_vocab_size, codes or config.image_tokens) != (
        config.image_vocab_size,
        config.image_tokens,
    ):
        grid = "x".join(map(str, found.get("grid") or [])) or "?"
        raise UserError(
            f"--shards {shards_dir}: made with a VQGAN of {codebook or '?'} codes and {codes or '?'} "
            f"codes per face ({grid}); the model config has image_vocab_size {config.image_vocab_size} "
            f"and image_tokens {config.image_tokens}: use a preset --config (fitted to the shards) or a "
            "config that matches"
        )
    room = config.seq_length - config.image_tokens
    if room < MIN_TEXT_ROOM:
        raise UserError(
            f"model config: seq_length {config.seq_length} leaves {room} positions beside the shards' "
            f"{config.image_tokens} image tokens; prompts and text need at least {MIN_TEXT_ROOM}"
        )
    return config


@dataclass
class Survey:
    """What one split's shards hold for training: the readable shards and each task's faces in each."""

    shards_dir: Path
    urls: list[str]
    faces: dict[str, list[int]]  # task -> faces that can serve it, per url
    datasets: dict[str, int]  # dataset -> faces with a text of it (before the `datasets` choice)
    skipped: list[str]  # damaged shards left out: one line each

    def tasks_on(self) -> list[str]:
        return [t for t in TASKS if sum(self.faces[t])]

    def why_off(self, task: str, datasets: tuple[str, ...]) -> str:
        need = "a caption" if task in CAPTION_TASKS else "attributes"
        chosen = f" from {', '.join(datasets)}" if datasets else ""
        return f"the {task} task is off: no train face in {len(self.urls)} shard(s) has {need}{chosen}"


def survey(shards_dir: Path, split: str, datasets: tuple[str, ...] = (), skip_bad: bool = False) -> Survey:
    """Read every shard of `split` once, checked against its stats: which faces each task has, shard by shard."""
    result = Survey(Path(shards_dir), [], {t: [] for t in TASKS}, {}, [])
    for url in shards.check_complete(shards_dir, split):
        try:
            counts = _count_faces(url, datasets, result.datasets)
        except shards.DamagedShard as e:
            if not skip_bad:
                raise
            log.warning("skipped %s", e)
            result.skipped.append(str(e))
            continue
        result.urls.append(url)
        for task in TASKS:
            result.faces[task].append(counts[task])
    unknown = sorted(set(datasets) - set(result.datasets))
    if unknown:
        raise UserError(
            f"--datasets {', '.join(unknown)}: not in the {split} shards of {shards_dir}, whose faces have "
            f"texts of {', '.join(sorted(result.datasets)) or 'no dataset'}"
        )
    return result


def _count_faces(url: str, datasets: tuple[str, ...], seen: dict[str, int]) -> dict[str, int]:
    counts = dict.fromkeys(TASKS, 0)
    for raw_meta, _ in shards.read_raw_samples_of(Path(url)):
        meta = shards.decode_meta(raw_meta, url)
        for name in {t.get("dataset") for t in meta["texts"]}:
            seen[name] = seen.get(name, 0) + 1
        for task in TASKS:
            counts[task] += bool(task_choices(task, meta, datasets))
    return counts


def tasks_with_data(
    shards_dir: Path, split: str = "train", datasets: tuple[str, ...] = (), skip_bad: bool = False
) -> dict[str, int]:
    """Faces per task in one split's shards (0: the task has no data there); what `evaluate` skips tasks by."""
    found = survey(shards_dir, split, tuple(datasets), skip_bad)
    return {task: sum(found.faces[task]) for task in TASKS}


def task_units(faces: list[int], urls: list[str], total_streams: int) -> list[tuple[str, int, int]]:
    """One task's units (url, part, parts): the shards with its faces, each cut into at most as many parts as it has
    faces, so that the units number at least `total_streams` where the faces allow; every unit has a face."""
    holding = [i for i, n in enumerate(faces) if n]
    if not holding:
        return []
    per_shard = -(-total_streams // len(holding))
    return [(urls[i], part, min(faces[i], per_shard)) for i in holding for part in range(min(faces[i], per_shard))]


# ----------------------------------------------------------------------------- one task's reader and buffer
@dataclass
class Item:
    image_id: str
    codes: np.ndarray  # int64 [image_tokens]
    choices: list  # captions (str) or attribute texts (dataset, pairs)


def task_choices(task: str, meta: dict, datasets: tuple[str, ...] = ()) -> list:
    """What a face offers a task: its captions, or its attribute texts as (head, pairs); the head is the text's
    own opening words (`celeba`, `wiki`), the same that evaluation and generation prompt with.
    With `datasets`, only texts of those datasets count."""
    texts = [t for t in meta["texts"] if t.get("dataset") in datasets] if datasets else meta["texts"]
    if task in CAPTION_TASKS:
        return [t["text"] for t in texts if t["kind"] == "caption" and t["text"]]
    return [(attribute_head(t), t["attributes"]) for t in texts if t["kind"] == "attributes" and t["attributes"]]


def may_have_caption(meta: bytes) -> bool:
    """False only when the face's JSON cannot hold a caption text: no `caption`, plain or \\u-escaped, anywhere in it.

    Far fewer faces have captions than attributes; the caption tasks skip parsing the others' JSON.
    """
    return b"caption" in meta or b"\\u" in meta


class TaskReader:
    """Faces that can serve one task, from one virtual stream's unit positions, through a shuffle buffer.

    `units`: (shard file, part, parts) from `task_units`; part j of p holds the shard's task faces j, j + p, ...
    """

    def __init__(
        self,
        task: str,
        units: list[tuple[str, int, int]],
        stream: int,
        total_streams: int,
        seed: int,
        capacity: int,
        datasets: tuple[str, ...] = (),
    ):
        self.task, self.units, self.stream, self.total = task, units, stream, total_streams
        self.seed, self.capacity, self.datasets = seed, capacity, datasets
        self.rng = random.Random(f"{seed}/{task}/{stream}/buffer")
        self.position = 0  # unit positions of this stream consumed
        self.offset = 0  # samples of the current unit's shard consumed
        self.seen = 0  # faces of the current unit's shard that can serve the task, among those consumed
        self.buffer: list[Item] = []
        self._samples = None
        self._order_epoch, self._order = -1, []

    def unit_at(self, position: int) -> tuple[str, int, int]:
        """Unit of this stream's `position`-th turn: global slot stream + position * total, in epoch order."""
        slot = self.stream + position * self.total
        epoch, k = divmod(slot, len(self.units))
        if epoch != self._order_epoch:
            self._order = list(range(len(self.units)))
            random.Random(f"{self.seed}/{self.task}/epoch{epoch}").shuffle(self._order)
            self._order_epoch = epoch
        return self.units[self._order[k]]

    def read(self) -> Item:
        """The next face of the stream that can serve this task (every unit holds one: `task_units`)."""
        while True:
            url, part, parts = self.unit_at(self.position)
            if self._samples is None:
                self._samples = itertools.islice(shards.read_raw_samples_of(Path(url)), self.offset, None)
            for raw_meta, raw_codes in self._samples:
                self.offset += 1
                if self.task in CAPTION_TASKS and not may_have_caption(raw_meta):
                    continue
                meta = shards.decode_meta(raw_meta, url)
                choices = task_choices(self.task, meta, self.datasets)
                if choices:
                    self.seen += 1
                    if (self.seen - 1) % parts == part:
                        return Item(meta["image_id"], shards.decode_codes(raw_codes), choices)
            if self.seen <= part:
                raise UserError(
                    f"{url}: changed while training read it: {self.seen} face(s) for the {self.task} task, "
                    f"{parts} when training started"
                )
            self._samples, self.position, self.offset, self.seen = None, self.position + 1, 0, 0

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
        return {
            "position": self.position,
            "offset": self.offset,
            "seen": self.seen,
            "rng": _rng_state(self.rng),
            "ids": [b.image_id for b in self.buffer],
            "codes": codes,
            "choices": json.dumps([b.choices for b in self.buffer], ensure_ascii=False),
        }

    def load_state(self, state: dict) -> None:
        self.position, self.offset, self.seen = state["position"], state["offset"], state["seen"]
        self.rng.setstate(_rng_tuple(state["rng"]))
        choices = json.loads(state["choices"])
        codes = state["codes"].numpy().astype(np.int64) if state["codes"] is not None else []
        self.buffer = [
            Item(i, c, [tuple(x) if isinstance(x, list) else x for x in ch])
            for i, c, ch in zip(state["ids"], codes, choices)
        ]
        self._samples = None


# ----------------------------------------------------------------------------- one virtual stream
class MicroBatches:
    """Balanced, length-sorted micro-batches of one virtual stream."""

    def __init__(
        self,
        units: dict[str, list],
        layouts: Layouts,
        config: DataConfig,
        micro_batch: int,
        stream: int,
        total_streams: int,
        seed: int,
    ):
        """`units`: task -> its units (`task_units`), for the tasks that are on."""
        self.layouts, self.config, self.micro_batch = layouts, config, micro_batch
        self.readers = {
            t: TaskReader(t, u, stream, total_streams, seed, config.shuffle_buffer, config.datasets)
            for t, u in units.items()
        }
        self.rng = random.Random(f"{seed}/{stream}/batches")
        self.pending: list[list[tuple[int, Sequence]]] = []
        self.skipped = 0  # faces whose text cannot become a row (characters outside the vocabulary, ...)

    def next(self) -> list[tuple[int, Sequence]]:
        if not self.pending:
            self.pending = self._pool()
        return self.pending.pop()

    def _pool(self) -> list[list[tuple[int, Sequence]]]:
        per_task = self.micro_batch // len(self.readers)
        batches = [[] for _ in range(self.config.pool)]
        for task in self.readers:
            t = TASKS.index(task)
            rows = [self._next_row(task) for _ in range(per_task * self.config.pool)]
            rows.sort(key=lambda s: len(s.tokens))
            for b in range(self.config.pool):
                batches[b].extend((t, s) for s in rows[b * per_task : (b + 1) * per_task])
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
        return {
            "rng": _rng_state(self.rng),
            "datasets": list(self.config.datasets),
            "readers": {t: r.state() for t, r in self.readers.items()},
            "pending": [[(t, s.tokens, s.segments, s.labels) for t, s in b] for b in self.pending],
        }

    def load_state(self, state: dict) -> None:
        saved = (sorted(state["readers"]), state["datasets"])
        if saved != (sorted(self.readers), list(self.config.datasets)):
            raise UserError(
                f"the checkpoint's data stream trained tasks {', '.join(saved[0])} on datasets "
                f"{', '.join(saved[1]) or 'all'}; these shards and --datasets give "
                f"{', '.join(self.readers)} on {', '.join(self.config.datasets) or 'all'}: "
                "resume with the same ones"
            )
        self.rng.setstate(_rng_tuple(state["rng"]))
        for t, r in self.readers.items():
            r.load_state(state["readers"][t])
        self.pending = [
            [(t, Sequence(list(a), list(b), list(c))) for t, a, b, c in batch] for batch in state["pending"]
        ]


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

    def __init__(
        self,
        shards_dir: Path,
        layouts: Layouts,
        config: DataConfig,
        micro_batch: int,
        streams: range,
        total_streams: int,
        seed: int,
    ):
        if micro_batch % len(TASKS):
            raise UserError(f"the micro-batch ({micro_batch}) must be a multiple of {len(TASKS)} to balance the tasks")
        if config.pool < 1 or config.shuffle_buffer < 1:
            raise UserError("the data pool and shuffle buffer must be >= 1")
        check_shards(shards_dir, layouts.config)
        self.survey = found = survey(shards_dir, "train", config.datasets, config.skip_bad_shards)
        self.tasks = found.tasks_on()
        if not self.tasks:
            raise UserError(
                f"no train face in {len(found.urls)} shard(s) of {shards_dir} has a caption or attributes"
                f"{' from ' + ', '.join(config.datasets) if config.datasets else ''}: nothing to train on"
            )
        for task in TASKS:
            if task not in self.tasks and 0 in streams:  # said once, by the process that owns stream 0
                log.warning("%s", found.why_off(task, config.datasets))
        if found.skipped and 0 in streams:
            log.warning(
                "%d damaged train shard(s) skipped (--skip-bad-shards); %d read", len(found.skipped), len(found.urls)
            )
        units = {t: task_units(found.faces[t], found.urls, total_streams) for t in self.tasks}
        self.total_streams, self.seed, self.micro_batch = total_streams, seed, micro_batch
        self.streams = {v: MicroBatches(units, layouts, config, micro_batch, v, total_streams, seed) for v in streams}

    def next_batch(self, k: int) -> dict:
        return collate(self.streams[list(self.streams)[k]].next())

    def state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "total_streams": self.total_streams,
            "micro_batch": self.micro_batch,
            "seed": self.seed,
            "streams": {v: s.state() for v, s in self.streams.items()},
        }

    def load_state(self, states: dict) -> None:
        """`states`: stream number -> state, from the checkpoint (which may hold other processes' streams)."""
        for v, s in self.streams.items():
            s.load_state(states[v])


def check_state(state: dict, total_streams: int, micro_batch: int, seed: int) -> None:
    if state.get("version") != STATE_VERSION:
        raise UserError(
            f"the checkpoint's data-stream state has version {state.get('version')}; this code reads {STATE_VERSION}"
        )
    if (state["total_streams"], state["micro_batch"], state["seed"]) != (total_streams, micro_batch, seed):
        raise UserError(
            f"the checkpoint streams data as {state['total_streams']} streams of micro-batch {state['micro_batch']} "
            f"(seed {state['seed']}); this run would use {total_streams} of {micro_batch} (seed {seed}): resume with "
            "the same global batch and micro-batch (any number of processes that divides them), or start a new "
            "run with --init-from"
        )


# ----------------------------------------------------------------------------- validation
class ValidationSet:
    """A fixed set of rows per task from the first faces of `SHARDS/val/` (seeded choices), in batches."""

    def __init__(self, shards_dir: Path, layouts: Layouts, config: DataConfig, seed: int):
        self.rows: dict[str, list[Sequence]] = {t: [] for t in TASKS}
        self.skipped: list[str] = []  # damaged val shards left out (skip_bad_shards)
        rng = random.Random(f"{seed}/val")
        for meta, codes in shards.read_samples(Path(shards_dir), "val", config.skip_bad_shards, self.skipped):
            for task in TASKS:
                choices = task_choices(task, meta, config.datasets)
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
            yield pad_batch(mine[start : start + batch_size])


def _rng_state(rng: random.Random):
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_tuple(state) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
