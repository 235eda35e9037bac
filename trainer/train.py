"""train: the Talk2Face prefix-LM on the tokenized shards, one CPU process or many GPUs on many machines.

    python cli.py train --shards shards/ --out run/ --config tiny --max-steps 300      # one plain process (CPU or 1 GPU)
    python cli.py train --shards shards/ --out run/ --resume                            # continue exactly
    python cli.py train --shards shards/ --out ft/ --init-from talk2face.bin            # fine-tune the released weights
    torchrun --nproc-per-node 8 cli.py train --shards shards/ --out run/                # 8 GPUs
    torchrun --nnodes 4 --node-rank R --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint HOST:29500 cli.py train --shards shards/ --out run/             # 4 machines (run on each)

The story, top to bottom:
  1. set-up: one `if` on the RANK variable (torchrun sets it): DDP over NCCL on GPUs, gloo on CPUs;
     rank 0 alone logs and writes.
  2. config: TrainConfig (below) is the only place defaults are written; the model config comes from
     `--config` (paper | tiny | a file), from `--init-from`, or from the checkpoint on `--resume`.
  3. data (`trainer.data`): the global batch (paper: 192) = processes x micro-batch x accumulation
     steps, balanced across the four tasks in every micro-batch; only SHARDS/train/ is read.
  4. model, AdamW and the warm-up/decay schedule (`trainer.optim`), optional torch.compile, DDP.
  5. the loop: accumulate, clip, step; log every `log_every` steps to RUN/log.jsonl and the progress
     bar; per-task validation loss on SHARDS/val/ every `val_every` steps (RUN/val.jsonl, RUN/loss.png);
     a checkpoint (`trainer.checkpoint`) every `save_every` steps and at the end.
bf16 autocast on CUDA; fp32 on the CPU (bf16 autocast there too with `cpu_bf16`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.errors import UserError
from common.fileio import output_folder, write_json
from trainer import checkpoint
from trainer.config import ModelConfig, load_config, save_config
from trainer.data import TASKS, DataConfig, TrainStream, ValidationSet, check_state
from trainer.model import Talk2Face
from trainer.optim import OptimConfig, build_optimizer, build_schedule
from trainer.sequences import IGNORE, Layouts
from trainer.text import TextTokenizer
from trainer.weights import RUNTIME_FIELDS, check_state_dict, config_differences, read_weights

log = logging.getLogger(__name__)
INIT_CONFIG_FILE = "init-model-config.json"  # the model config that --init-from weights brought

PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}


@dataclass(frozen=True)
class TrainConfig:
    model: str = "paper"  # model config: paper | tiny | a JSON file
    batch_size: int = 192  # global batch (rows per optimiser step, all processes together), the paper's
    micro_batch_size: int = 24  # rows per process per forward pass; a multiple of 4 (the tasks)
    max_steps: int = 500_000  # the paper's
    save_every: int = 1000
    keep_last: int = 3  # checkpoints kept
    log_every: int = 1
    val_every: int = 1000
    val_batch_size: int = 32
    seed: int = 1234
    compile: bool = False  # torch.compile the model
    cpu_bf16: bool = False  # bf16 autocast on the CPU too (always on CUDA)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        values = dict(values)
        optim, data = dict(values.pop("optim", {})), values.pop("data", {})
        if "betas" in optim:
            optim["betas"] = tuple(optim["betas"])
        return cls(**values, optim=OptimConfig(**optim), data=DataConfig(**data))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- 1. set-up
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    if "RANK" not in os.environ:
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local}" if cuda else "cpu"))


def all_gather(obj, d: Dist) -> list:
    if d.world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def all_sum(values: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        import torch.distributed as dist

        dist.all_reduce(values)
    return values


# ----------------------------------------------------------------------------- 2-4. everything the loop needs
def accumulation_steps(config: TrainConfig, world: int) -> int:
    if config.micro_batch_size < 4 or config.micro_batch_size % len(TASKS):
        raise UserError(f"--micro-batch-size {config.micro_batch_size} must be a positive multiple of {len(TASKS)} (the tasks)")
    if config.batch_size % (world * config.micro_batch_size):
        raise UserError(f"the global batch {config.batch_size} is not {world} process(es) x micro-batch "
                        f"{config.micro_batch_size} x a whole number of accumulation steps")
    return config.batch_size // (world * config.micro_batch_size)


def model_for(config: TrainConfig, init_from: Path | None, folder: Path | None) -> tuple[ModelConfig, dict | None]:
    """The model config and the weights to start from: a checkpoint to resume, --init-from, or none (random)."""
    given = load_config(config.model)
    source = folder or init_from
    if source is None:
        return given, None
    state, found, carried = read_weights(Path(source))
    if carried is not None:
        differences = config_differences(carried, given, ignore=RUNTIME_FIELDS)
        if differences and folder is not None:
            raise UserError(f"{folder}: the run was trained with another model config (vocabulary, tokenizer or size): "
                            f"{differences}")
        model_config = carried.replace(**{k: getattr(given, k) for k in RUNTIME_FIELDS})
    else:
        model_config = given
        if found in ("released", "uer") and given.numbers != "whole":
            log.warning("%s: the released weights were trained with whole numbers; fine-tuning with numbers=whole", source)
            model_config = given.replace(numbers="whole")
    check_state_dict(state, model_config, str(source))
    return model_config, state


class LossModel(torch.nn.Module):
    """The model and its loss in one forward, so DDP and torch.compile see the whole step."""

    def __init__(self, model: Talk2Face):
        super().__init__()
        self.model = model

    def forward(self, tokens, segments, labels):
        return self.model.loss(tokens, segments, labels)


def flops_per_token(config: ModelConfig, parameters: int) -> float:
    """6 x parameters plus attention (12 x layers x hidden x sequence length), forward and backward."""
    return 6 * parameters + 12 * config.layers * config.hidden_size * config.seq_length


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


# ----------------------------------------------------------------------------- 5. the loop
def train(shards_dir: Path, out: Path, config: TrainConfig | None = None, *, resume: bool = False,
          init_from: Path | None = None, progress: bool = True, stop_at: int | None = None) -> dict:
    """Train (or continue) a run in `out` on `shards_dir`; returns a summary (on every rank).

    `stop_at` ends the run after that step with a checkpoint, as a killed or time-limited job would
    (the schedule still spans `max_steps`); `resume` continues it.
    """
    config = config or TrainConfig()
    d = setup_distributed()
    out = Path(out)
    if d.main:
        output_folder(out)
    folder = checkpoint.latest(out)
    if resume and folder is None:
        raise UserError(f"--resume: {out} holds no checkpoint")
    if not resume and folder is not None:
        raise UserError(f"{out} already holds checkpoints ({folder.name}); pass --resume or use a new --out")
    if resume and init_from is not None:
        raise UserError("--resume and --init-from exclude each other")
    saved = checkpoint.load_state(folder) if resume else None

    accum = accumulation_steps(config, d.world)
    model_config, weights = model_for(config, init_from, folder)
    if init_from is not None and config_differences(model_config, load_config(config.model), ignore=RUNTIME_FIELDS):
        # the weights brought their own config: record it as the run's, so that --resume finds the same one
        resolved = out / INIT_CONFIG_FILE
        if d.main:
            save_config(model_config, resolved)
        config = dataclasses.replace(config, model=str(resolved.resolve()))
    layouts = Layouts(model_config, TextTokenizer.for_config(model_config))
    total_streams = config.batch_size // config.micro_batch_size
    mine = range(d.rank * accum, (d.rank + 1) * accum)
    stream = TrainStream(shards_dir, layouts, config.data, config.micro_batch_size, mine, total_streams, config.seed)
    validation = ValidationSet(shards_dir, layouts, config.data, config.seed)

    torch.manual_seed(config.seed)
    with torch.device("meta") if weights is not None else contextlib.nullcontext():
        model = Talk2Face(model_config)
    if weights is not None:
        model.load_state_dict(weights, strict=True, assign=True)
    model.to(d.device).train()
    optimizer = build_optimizer(model, config.optim)
    schedule = build_schedule(optimizer, config.optim, config.max_steps)
    torch.manual_seed(config.seed + 1 + d.rank)  # dropout differs per process
    start = 0
    if saved is not None:
        start = restore(saved, stream, optimizer, schedule, config, d, total_streams)
    runner = LossModel(model)
    if config.compile:
        runner = torch.compile(runner)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(runner, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    if d.main:
        write_json(config.to_dict(), out / "train-config.json")
        truncate_log(out / "log.jsonl", start)
        truncate_log(out / "val.jsonl", start)
    logger = Logger(out, d, model_config, model.num_parameters(), config, start, progress)
    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16,
                              enabled=d.device.type == "cuda" or config.cpu_bf16)
    loss = math.nan
    last = min(config.max_steps, stop_at or config.max_steps)
    try:
        for step in range(start + 1, last + 1):
            started = time.perf_counter()
            losses = torch.zeros(2, device=d.device)  # loss sum over micro-batches, micro-batches
            tokens, padding = 0, 0.0
            for k in range(accum):
                batch = stream.next_batch(k)
                tokens += batch["real_tokens"]
                padding += batch["padding"] / accum
                args = [batch[n].to(d.device, non_blocking=True) for n in ("tokens", "segments", "labels")]
                sync = contextlib.nullcontext() if d.world == 1 or k == accum - 1 else runner.no_sync()
                with sync, autocast:
                    micro_loss = runner(*args)
                (micro_loss / accum).backward()
                losses += torch.stack([micro_loss.detach().float(), torch.ones((), device=d.device)])
            if config.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if step % config.log_every == 0 or step == config.max_steps:
                totals = all_sum(torch.cat([losses, torch.tensor([tokens, padding], device=d.device, dtype=torch.float32)]), d)
                loss = (totals[0] / totals[1]).item()
                logger.step(step, loss, lr, int(totals[2].item()), totals[3].item() / d.world, time.perf_counter() - started)
            if validation and (step % config.val_every == 0 or step == config.max_steps):
                logger.validation(step, validate(model, validation, config, d, autocast))
            if step % config.save_every == 0 or step == last:
                save(out, step, model, optimizer, schedule, stream, config, d)
    finally:
        logger.close()
    return {"out": str(out), "rank": d.rank, "steps": last, "resumed_from": start, "loss": loss,
            "checkpoint": str(checkpoint.latest(out)), "world_size": d.world, "accumulation": accum,
            "parameters": model.num_parameters()}


def restore(saved, stream: TrainStream, optimizer, schedule, config: TrainConfig, d: Dist, total_streams: int) -> int:
    state, optimizer_state, _ = saved
    check_state(state["data"], total_streams, config.micro_batch_size, config.seed)
    stream.load_state(state["data"]["streams"])
    optimizer.load_state_dict(optimizer_state)
    schedule.load_state_dict(state["schedule"])
    if state["world_size"] == d.world:
        torch.set_rng_state(state["rng"][d.rank]["torch"])
        if d.device.type == "cuda" and state["rng"][d.rank].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"][d.rank]["cuda"], d.device)
    else:
        log.warning("resuming %d process(es) from a checkpoint of %d: the data continues exactly, dropout is reseeded",
                    d.world, state["world_size"])
        torch.manual_seed(config.seed + 1 + d.rank + 1000 * state["step"])
    return state["step"]


def save(out: Path, step: int, model, optimizer, schedule, stream: TrainStream, config: TrainConfig, d: Dist) -> None:
    """Gather every process's data streams and RNG, then rank 0 writes the checkpoint; everyone waits."""
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(d.device) if d.device.type == "cuda" else None}
    gathered = all_gather((stream.state(), rng), d)
    if d.main:
        data = dict(gathered[0][0])
        data["streams"] = {v: s for data_state, _ in gathered for v, s in data_state["streams"].items()}
        state = {"step": step, "world_size": d.world, "schedule": schedule.state_dict(), "data": data,
                 "rng": [r for _, r in gathered]}
        checkpoint.save(out, step, model, optimizer, state, config.to_dict(), config.keep_last)
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


@torch.no_grad()
def validate(model: Talk2Face, validation: ValidationSet, config: TrainConfig, d: Dist, autocast) -> dict:
    """Mean target-token loss per task on the validation set (all processes share the rows)."""
    model.eval()
    sums = torch.zeros(len(TASKS), 2, device=d.device, dtype=torch.float64)
    for t, task in enumerate(TASKS):
        for batch in validation.batches(task, config.val_batch_size, d.rank, d.world):
            tokens, segments, labels = (batch[n].to(d.device) for n in ("tokens", "segments", "labels"))
            with autocast:
                loss = model.loss(tokens, segments, labels, reduction="sum")
            sums[t] += torch.stack([loss.double(), (labels != IGNORE).sum().double()])
    model.train()
    sums = all_sum(sums, d)
    return {task: round((sums[t, 0] / sums[t, 1]).item(), 5) for t, task in enumerate(TASKS) if sums[t, 1] > 0}


# ----------------------------------------------------------------------------- logs
def truncate_log(path: Path, step: int) -> None:
    """Drop lines of steps after `step` (a run killed after its last checkpoint logged them)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


class Logger:
    """Rank 0: progress bar, RUN/log.jsonl, RUN/val.jsonl, RUN/loss.png, TensorBoard if installed."""

    def __init__(self, out: Path, d: Dist, model_config: ModelConfig, parameters: int, config: TrainConfig, start: int,
                 progress: bool):
        self.out, self.main = out, d.main
        self.flops = flops_per_token(model_config, parameters)
        self.peak = peak_flops(d.device)
        self.peak = self.peak * d.world if self.peak else None
        self.bar = self.tb = None
        if not self.main:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=config.max_steps, initial=start, unit="step", desc="train", disable=not progress, dynamic_ncols=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            pass

    def step(self, step: int, loss: float, lr: float, tokens: int, padding: float, seconds: float) -> None:
        if not self.main:
            return
        tokens_per_s = tokens / max(seconds, 1e-9)
        row = {"step": step, "loss": round(loss, 5), "lr": lr, "tokens_per_s": round(tokens_per_s, 1),
               "padding": round(padding, 4), "seconds": round(seconds, 4)}
        postfix = {"loss": f"{loss:.4f}", "tok/s": f"{tokens_per_s:,.0f}", "pad": f"{padding:.1%}"}
        if self.peak:
            row["mfu"] = round(self.flops * tokens_per_s / self.peak, 4)
            postfix["mfu"] = f"{row['mfu']:.1%}"
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb:
            for k in ("loss", "lr", "tokens_per_s", "padding"):
                self.tb.add_scalar(f"train/{k}", row[k], step)
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.n = step
        self.bar.refresh()

    def validation(self, step: int, losses: dict) -> None:
        if not self.main:
            return
        with open(self.out / "val.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "val_loss": losses}) + "\n")
        if self.tb:
            for task, value in losses.items():
                self.tb.add_scalar(f"val/{task}", value, step)
        plot_losses(self.out)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def plot_losses(out: Path) -> None:
    """RUN/loss.png: the training loss and each task's validation loss against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines() if line] \
        if (out / "log.jsonl").is_file() else []
    vals = [json.loads(line) for line in (out / "val.jsonl").read_text(encoding="utf-8").splitlines() if line]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train", linewidth=0.8)
    for task in TASKS:
        points = [(v["step"], v["val_loss"][task]) for v in vals if task in v["val_loss"]]
        if points:
            ax.plot(*zip(*points), marker="o", label=f"val {task}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (target tokens)")
    ax.legend()
    fig.tight_layout()
    tmp = out / ".loss.png.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out / "loss.png")
