"""tokenize-images: encode every unique face of a corpus once with the VQGAN, into resumable shards.

    python cli.py tokenize-images --corpus corpus/ --out shards/ \
        --vqgan-config 2021-04-23T18-19-01-project.yaml --vqgan-ckpt last.ckpt --gpus 8

How the work flows
  * The faces (the corpus image table, sorted by image_id) with their texts (its pairs) are grouped
    by split and each split is cut into shards of `shard_size` faces, written under SHARDS/SPLIT/
    (`facetokens.shards`). The work list is every split's shards (train, val, test); this machine
    takes its block of it (`num_nodes`/`node_rank`, or an explicit `shard_range`) and skips the
    shards already complete.
  * One encoder process per GPU (`gpus`; 0 = one CPU process; on a machine without CUDA, N >= 1
    gives N CPU processes) takes every N-th pending shard. Inside it a torch DataLoader with
    `loader_workers` processes opens, crops and resizes the images (`facetokens.images`) in batches
    that never straddle two shards, so a shard's codes do not depend on which process made it.
  * On the GPU, codes come back through an asynchronous copy per batch: the next batch is queued
    before the previous one is collected, so the GPU keeps working while the encoder process
    writes shards (~1 MB per 1,000 faces).
  * bf16 runs the convolutions in bfloat16 (the nearest-code search stays fp32); the first batch is
    also encoded in fp32 and the share of equal codes is reported.
  * With fp32 on a GPU, TF32 is switched off: "fp32" means the codes of the fp32 model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import queue as queue_module
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.locks import folder_lock
from common.progress import Progress
from common.records import SPLITS
from corpus import layout

from . import shards
from .config import TokenizeConfig, cpu_cores
from .images import SIZE, try_prepare_face
from .shards import Face
from .vqgan import VQGANConfig, encode_batch
from .vqgan_files import read_checkpoint, resolve_config, weights_digest

log = logging.getLogger(__name__)

AGREEMENT_WARNING = 0.9  # below this share of equal bf16/fp32 codes, the summary warns
TEXT_COLUMNS = ("image_id", "dataset", "kind", "text", "attributes")


# ----------------------------------------------------------------------------- reading the corpus
def read_faces(corpus: Path) -> list[Face]:
    """Every unique face of CORPUS (sorted by image_id) with the texts paired with it, in pair-file order."""
    corpus = Path(corpus)
    table = layout.read_images(corpus)
    columns = {c: table.column(c).to_pylist() for c in layout.IMAGE_SCHEMA.names}
    texts = read_texts(corpus)
    faces = [
        Face(
            image_id=i,
            dataset=d,
            path=p,
            image=r,
            box=list(b) if b is not None else None,
            split=s,
            texts=texts.pop(i, []),
        )
        for i, d, p, r, b, s in zip(*(columns[c] for c in layout.IMAGE_SCHEMA.names))
    ]
    if texts:
        log.warning("%d image_ids of the pairs are not in images.parquet; their texts are left out", len(texts))
    faces.sort(key=lambda f: f.image_id)
    if len({f.image_id for f in faces}) != len(faces):
        raise UserError(f"{layout.images_file(corpus)}: image_id values are not unique")
    return faces


def read_texts(corpus: Path) -> dict[str, list[dict]]:
    texts: dict[str, list[dict]] = {}
    for cols in layout.read_pair_columns(corpus, list(TEXT_COLUMNS)):
        for image_id, dataset, kind, text, attributes in zip(*cols):
            texts.setdefault(image_id, []).append(
                {"dataset": dataset, "kind": kind, "text": text, "attributes": attributes}
            )
    return texts


def faces_digest(faces: list[Face]) -> str:
    """What the shards' content depends on (not the absolute paths: moving the data keeps the shards valid)."""
    h = hashlib.sha256()
    for f in faces:
        h.update(json.dumps([f.image_id, f.dataset, f.image, f.box, f.split, f.texts], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


# ----------------------------------------------------------------------------- work items
@dataclass
class ShardTask:
    unit: int  # position in the work list (every split's shards)
    split: str
    index: int  # shard number within its split
    first: int  # position of its first face among its split's faces
    faces: list[Face]


@dataclass
class WorkerOptions:
    config: VQGANConfig
    ckpt: Path
    batch_size: int
    loader_workers: int
    precision: str
    threads: int
    check_agreement: bool


def plan_devices(gpus: int) -> list[str]:
    """One device per encoder process: cuda:0..N-1, or CPUs where there is no CUDA (`--gpus 0`: one)."""
    import torch

    if gpus < 0:
        raise UserError("--gpus must be >= 0")
    if gpus == 0:
        return ["cpu"]
    if not torch.cuda.is_available():
        log.warning("no CUDA device: running %d encoder process(es) on the CPU", gpus)
        return ["cpu"] * gpus
    available = torch.cuda.device_count()
    if gpus > available:
        raise UserError(f"--gpus {gpus}: only {available} CUDA device(s) visible")
    return [f"cuda:{i}" for i in range(gpus)]


# ----------------------------------------------------------------------------- decoding (loader workers)
class FaceImages:
    """Map-style dataset over (task, position) pairs: returns the prepared face or its reject."""

    def __init__(self, tasks: list[ShardTask]):
        self.items = [(t.unit, t.first + j, f.path, f.box) for t in tasks for j, f in enumerate(t.faces)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        shard, position, path, box = self.items[i]
        array, reject = try_prepare_face(path, box, SIZE)
        return shard, position, array, reject


def shard_aligned_batches(tasks: list[ShardTask], batch_size: int) -> list[list[int]]:
    """Dataset indices in batches of `batch_size` that never cross a shard boundary."""
    batches, start = [], 0
    for task in tasks:
        n = len(task.faces)
        batches.extend(list(range(start + i, start + min(i + batch_size, n))) for i in range(0, n, batch_size))
        start += n
    return batches


def collate(items):
    import torch

    good = [(pos, arr) for _, pos, arr, rej in items if arr is not None]
    images = (
        torch.from_numpy(np.stack([a for _, a in good])) if good else torch.empty(0, SIZE, SIZE, 3, dtype=torch.uint8)
    )
    rejects = [(pos, rej.reason, rej.detail) for _, pos, arr, rej in items if arr is None]
    return {
        "shard": items[0][0],
        "positions": [p for p, _ in good],
        "images": images,
        "rejects": rejects,
        "size": len(items),
    }


def make_loader(tasks: list[ShardTask], options: WorkerOptions, pin: bool):
    from torch.utils.data import DataLoader

    return DataLoader(
        FaceImages(tasks),
        batch_sampler=shard_aligned_batches(tasks, options.batch_size),
        num_workers=options.loader_workers,
        collate_fn=collate,
        pin_memory=pin,
        prefetch_factor=4 if options.loader_workers else None,
    )


# ----------------------------------------------------------------------------- encoding (one process per device)
class ShardAssembler:
    """Collects a shard's codes and rejects batch by batch and writes it once all its faces are in."""

    def __init__(self, out: Path, tasks: list[ShardTask], report: Callable):
        self.out, self.report = out, report
        self.tasks = {t.unit: t for t in tasks}
        self.codes: dict[int, dict[int, np.ndarray]] = {t.unit: {} for t in tasks}
        self.rejects: dict[int, list] = {t.unit: [] for t in tasks}

    def add(self, batch: dict, codes: HostCodes) -> None:
        index = batch["shard"]
        for position, row in zip(batch["positions"], codes.numpy()):
            self.codes[index][position] = row
        self.rejects[index].extend(batch["rejects"])
        self.report("faces", batch["size"])
        task = self.tasks[index]
        if len(self.codes[index]) + len(self.rejects[index]) == len(task.faces):
            self.finish(task)

    def finish(self, task: ShardTask) -> None:
        codes, rejected = self.codes.pop(task.unit), {p: (r, d) for p, r, d in self.rejects.pop(task.unit)}
        samples, rejects = [], []
        for j, face in enumerate(task.faces):
            position = task.first + j
            if position in codes:
                samples.append(shards.sample(face, codes[position]))
            else:
                reason, detail = rejected[position]
                rejects.append({"image_id": face.image_id, "path": face.path, "reason": reason, "detail": detail})
        stats = shards.write_shard(
            shards.split_dir(self.out, task.split),
            task.index,
            samples,
            rejects,
            task.first,
            task.first + len(task.faces),
        )
        stats = {**stats, "split": task.split}
        self.report("shard", stats)


def encode_shards(out: Path, device: str, tasks: list[ShardTask], options: WorkerOptions, report: Callable) -> None:
    """Encode and write the given shards on one device; `report(kind, value)` tells the parent about progress."""
    import torch

    torch.set_num_threads(options.threads)
    on_gpu = device.startswith("cuda")
    if on_gpu:
        torch.cuda.set_device(device)  # before the loader: its pinning thread uses the current device
    loader = iter(make_loader(tasks, options, pin=on_gpu))  # decoding starts while the model loads
    model = load_encoder(options, device)
    bf16 = options.precision == "bf16"
    assembler = ShardAssembler(out, tasks, report)
    check_agreement = options.check_agreement and bf16
    previous = None
    for batch in loader:
        codes = encode_batch(model, batch["images"], device, bf16)
        if check_agreement and len(batch["positions"]):
            report("agreement", agreement(model, batch["images"], device, codes))
            check_agreement = False
        current = HostCodes(codes)
        if previous is not None:  # the GPU encodes this batch while the previous one is collected and written
            assembler.add(*previous)
        previous = (batch, current)
    if previous is not None:
        assembler.add(*previous)


class HostCodes:
    """Codes on their way to the CPU: on a GPU an asynchronous copy into pinned memory and an event.

    Waiting for that event waits for this batch only, not for the batch queued behind it (a plain
    `.cpu()` would wait for everything queued on the stream, leaving the GPU idle while shards are written).
    """

    def __init__(self, codes):
        import torch

        if codes.device.type == "cuda":
            self.host = torch.empty(codes.shape, dtype=codes.dtype, pin_memory=True)
            self.host.copy_(codes, non_blocking=True)
            self.ready = torch.cuda.Event()
            self.ready.record()
        else:
            self.host, self.ready = codes, None

    def numpy(self) -> np.ndarray:
        if self.ready is not None:
            self.ready.synchronize()
        return self.host.numpy()


def load_encoder(options: WorkerOptions, device: str):
    import torch

    from .vqgan import build_vqgan

    weights, _ = read_checkpoint(options.ckpt)
    model = build_vqgan(options.config, weights, with_decoder=False, where=str(options.ckpt)).to(device)
    if device.startswith("cuda"):
        torch.backends.cudnn.allow_tf32 = options.precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = options.precision != "fp32"
        model = model.to(memory_format=torch.channels_last)
    return model


def agreement(model, images, device: str, bf16_codes) -> dict:
    fp32_codes = encode_batch(model, images, device, bf16=False)
    equal = (fp32_codes == bf16_codes).float().mean().item()
    return {"faces": len(images), "codes_equal": round(equal, 4)}


# ----------------------------------------------------------------------------- processes
def _worker_main(rank: int, out: Path, device: str, tasks: list[ShardTask], options: WorkerOptions, messages) -> None:
    """Entry point of a spawned encoder process: every report goes to the parent through `messages`."""
    try:
        encode_shards(out, device, tasks, options, lambda kind, value: messages.put((kind, rank, value)))
        messages.put(("done", rank, None))
    except UserError as e:
        messages.put(("user_error", rank, str(e)))
    except BaseException:  # noqa: BLE001 - the parent re-raises it with the worker's traceback
        messages.put(("error", rank, traceback.format_exc()))


def run_workers(
    out: Path, devices: list[str], assignments: list[list[ShardTask]], options: list[WorkerOptions], on_report: Callable
) -> None:
    """Run one encoder per device: in this process when there is one, else as spawned processes."""
    if len(assignments) == 1:
        encode_shards(out, devices[0], assignments[0], options[0], on_report)
        return
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    processes = [
        ctx.Process(target=_worker_main, args=(rank, out, devices[rank], assignments[rank], options[rank], messages))
        for rank in range(len(assignments))
    ]
    for p in processes:
        p.start()
    try:
        _collect(processes, messages, on_report)
    finally:
        for p in processes:
            if p.is_alive():
                p.terminate()
            p.join()


def _collect(processes, messages, on_report: Callable) -> None:
    running = set(range(len(processes)))
    while running:
        try:
            kind, rank, value = messages.get(timeout=1.0)
        except queue_module.Empty:
            dead = [r for r in running if not processes[r].is_alive() and processes[r].exitcode not in (0, None)]
            if dead:
                raise RuntimeError(f"encoder process {dead[0]} died (exit code {processes[dead[0]].exitcode})")
            continue
        if kind == "done":
            running.discard(rank)
        elif kind == "user_error":
            raise UserError(value)
        elif kind == "error":
            raise RuntimeError(f"encoder process {rank} failed:\n{value}")
        else:
            on_report(kind, value)


# ----------------------------------------------------------------------------- the command
class WorkerEvents:
    """Counts faces and shards from every encoder; drives the progress (common.progress: a bar or plain lines)."""

    def __init__(self, total_faces: int, enabled: bool):
        self.bar = Progress(total_faces, "tokenize", "face", enabled=enabled)
        self.stats: list[dict] = []
        self.agreement: dict | None = None

    def __call__(self, kind: str, value) -> None:
        if kind == "faces":
            self.bar.update(value, f"shards={len(self.stats)}")
        elif kind == "shard":
            self.stats.append(value)
        elif kind == "agreement":
            self.agreement = value


def tokenize_images(
    corpus: Path,
    out: Path,
    *,
    vqgan_config: Path | None,
    vqgan_ckpt: Path,
    config: TokenizeConfig | None = None,
    progress: bool = True,
) -> dict:
    """Encode every face of `corpus` into WebDataset shards under `out`; resumes finished shards. Returns a summary."""
    config = config or TokenizeConfig()
    # one lock per machine: the machines of a multi-node run share the folder, each its own block of shards
    with folder_lock(out, "tokenize-images", name=f".lock-node-{config.node_rank}"):
        return _tokenize_locked(corpus, Path(out), vqgan_config, vqgan_ckpt, config, progress)


def _tokenize_locked(
    corpus: Path, out: Path, vqgan_config: Path | None, vqgan_ckpt: Path, config: TokenizeConfig, progress: bool
) -> dict:
    started = time.perf_counter()
    faces = read_faces(corpus)
    weights, stored = read_checkpoint(vqgan_ckpt)
    vqgan = resolve_config(vqgan_config, stored, vqgan_ckpt)
    if vqgan.resolution != SIZE:
        raise UserError(
            f"{vqgan_config or vqgan_ckpt}: the VQGAN's resolution is {vqgan.resolution}; tokenize-images "
            f"reads faces at {SIZE}x{SIZE}"
        )
    plan = {
        "format": shards.FORMAT_VERSION,
        "faces": len(faces),
        "faces_sha256": faces_digest(faces),
        "shard_size": config.shard_size,
        "precision": config.precision,
        "vqgan": {"config": vqgan.to_dict(), "encoder_sha256": weights_digest(weights)},
    }
    del weights
    shards.check_plan(out, plan)
    shards.write_run_config(out, config.node_rank, dataclasses.asdict(config))
    by_split = faces_by_split(faces)
    for split in SPLITS:
        shards.split_dir(out, split).mkdir(exist_ok=True)
    units = shards.plan_units({s: len(f) for s, f in by_split.items()}, config.shard_size)
    n_shards = len(units)
    mine = my_shards(n_shards, config.num_nodes, config.node_rank, config.shard_range)
    shards.remove_stale_temporaries(out, [units[k] for k in mine])
    pending = [k for k in mine if not shards.is_complete(shards.split_dir(out, units[k][0]), units[k][1])]
    devices = plan_devices(config.gpus)[: max(1, len(pending))]
    assignments = [
        [make_task(k, units, by_split, config.shard_size) for k in pending[rank :: len(devices)]]
        for rank in range(len(devices))
    ]
    threads = max(1, cpu_cores() // len(devices)) if devices[0] == "cpu" else 2
    options = [
        WorkerOptions(
            vqgan,
            Path(vqgan_ckpt),
            config.batch_size,
            config.loader_workers,
            config.precision,
            threads,
            check_agreement=rank == 0,
        )
        for rank in range(len(devices))
    ]
    tracker = WorkerEvents(sum(len(t.faces) for a in assignments for t in a), progress)
    log.info(
        "%d faces, %d shards; this machine: shards %d-%d, %d to do on %s",
        len(faces),
        n_shards,
        mine.start,
        mine.stop - 1,
        len(pending),
        ", ".join(devices),
    )
    encode_started = time.perf_counter()
    try:
        if pending:
            run_workers(out, devices, assignments, options, tracker)
    finally:
        tracker.bar.close()
    index = shards.write_index(out, units, plan, corpus=Path(corpus).resolve())
    return summarise(out, n_shards, mine, pending, devices, config.precision, tracker, index, started, encode_started)


def my_shards(n_shards: int, num_nodes: int, node_rank: int, shard_range: tuple[int, int] | None) -> range:
    if shard_range is None:
        return shards.node_shards(n_shards, num_nodes, node_rank)
    start, stop = shard_range
    if not 0 <= start <= stop <= n_shards:
        raise UserError(f"--shard-range {start}:{stop} is outside the {n_shards} shards")
    return range(start, stop)


def faces_by_split(faces: list[Face]) -> dict[str, list[Face]]:
    """Each split's faces, in image_id order."""
    unknown = sorted({f.split for f in faces} - set(SPLITS))
    if unknown:
        raise UserError(
            f"the corpus has faces in split(s) {', '.join(map(repr, unknown))}; expected {', '.join(SPLITS)}"
        )
    return {split: [f for f in faces if f.split == split] for split in SPLITS}


def make_task(unit: int, units: list[tuple[str, int]], by_split: dict[str, list[Face]], shard_size: int) -> ShardTask:
    split, index = units[unit]
    first, last = shards.shard_bounds(index, len(by_split[split]), shard_size)
    return ShardTask(unit=unit, split=split, index=index, first=first, faces=by_split[split][first:last])


def summarise(
    out, n_shards, mine, pending, devices, precision, tracker: Progress, index, started, encode_started
) -> dict:
    seconds = time.perf_counter() - started
    encode_seconds = time.perf_counter() - encode_started
    faces = sum(s["faces"] for s in tracker.stats)
    rejects = [r for s in tracker.stats for r in s["rejects"]]
    by_reason: dict[str, int] = {}
    for r in rejects:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    if tracker.agreement and tracker.agreement["codes_equal"] < AGREEMENT_WARNING:
        log.warning(
            "bf16 codes agree with fp32 on only %.1f%% of a sample: consider --precision fp32",
            100 * tracker.agreement["codes_equal"],
        )
    return {
        "out": str(out),
        "shards_total": n_shards,
        "this_machine": [mine.start, mine.stop],
        "shards_skipped_complete": len(mine) - len(pending),
        "shards_written": len(tracker.stats),
        "faces_written": faces,
        "faces_written_per_split": {sp: sum(s["faces"] for s in tracker.stats if s["split"] == sp) for sp in SPLITS},
        "rejects": {"total": len(rejects), "by_reason": dict(sorted(by_reason.items()))},
        "devices": devices,
        "precision": precision,
        "bf16_agreement": tracker.agreement,
        "seconds": round(seconds, 2),
        "faces_per_s": round((faces + len(rejects)) / encode_seconds, 2) if tracker.stats else None,
        "index": str(index) if index else None,
    }
