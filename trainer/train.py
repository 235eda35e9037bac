"""train: the Talk2Face prefix-LM on the tokenized shards, one CPU process or many GPUs on many machines.

    python cli.py train --shards shards/ --out run/ --config tiny --max-steps 300   # one process (CPU or 1 GPU)
    python cli.py train --shards shards/ --out run/ --resume                         # continue exactly
    python cli.py train --shards shards/ --out run/ --resume --max-steps 600 --reschedule  # a longer schedule
    python cli.py train --shards shards/ --out ft/ --init-from talk2face.bin         # fine-tune the released weights
    torchrun --nproc-per-node 8 cli.py train --shards shards/ --out run/             # 8 GPUs
    torchrun --nnodes 4 --node-rank R --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint HOST:29500 cli.py train --shards shards/ --out run/          # 4 machines (run on each)

The story, top to bottom:
  1. set-up: one `if` on the RANK variable (torchrun sets it): DDP over NCCL on GPUs, gloo on CPUs;
     rank 0 alone takes the run folder's lock, logs and writes.
  2. config: `trainer.run.resolve` decides the TrainConfig (its defaults are written there only) and the
     model config: `--config` (a preset of trainer/configs/ or a file), `--init-from`, or the checkpoint's
     on `--resume`, and what a resumed run may change.
  3. `setup` builds the `Run`: data (`trainer.data`; the global batch, paper 192, = processes x micro-batch x
     accumulation steps, the four tasks balanced in every micro-batch, only SHARDS/train/ read), the model,
     AdamW and the warm-up/decay schedule (`trainer.optim`), torch.compile, DDP; a resumed run's state.
  4. `train_step`: accumulate, check the loss is finite, clip, step.
  5. `train`, the loop: a `train_step`, a log line every `log_every` steps (RUN/log.jsonl; the progress bar, or
     plain lines when stderr is no terminal), per-task validation loss on SHARDS/val/ every `val_every` steps
     (RUN/val.jsonl, RUN/loss.png), a checkpoint (`trainer.checkpoint`) every `save_every` steps and at the end.
bf16 autocast on CUDA; fp32 on the CPU (bf16 autocast there too with `cpu_bf16`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.errors import UserError
from common.fileio import atomic_path, write_json
from common.locks import folder_lock
from trainer import checkpoint
from trainer.config import ModelConfig, check_fits_memory, save_config
from trainer.data import TASKS, TrainStream, ValidationSet, check_state
from trainer.model import Talk2Face
from trainer.optim import build_optimizer, build_schedule, reschedule
from trainer.run import Plan, TrainConfig, given_values, resolve
from trainer.sequences import IGNORE, Layouts
from trainer.text import TextTokenizer
from trainer.weights import check_state_dict, read_weights

log = logging.getLogger(__name__)
__all__ = ["LossModel", "TrainConfig", "setup", "train", "train_step"]

PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
    "L4": 121e12,
    "4090": 165e12,
}


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
        raise UserError(
            f"--micro-batch-size {config.micro_batch_size} must be a positive multiple of {len(TASKS)} (the tasks)"
        )
    if config.batch_size % (world * config.micro_batch_size):
        raise UserError(
            f"the global batch {config.batch_size} is not {world} process(es) x micro-batch "
            f"{config.micro_batch_size} x a whole number of accumulation steps"
        )
    return config.batch_size // (world * config.micro_batch_size)


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


def device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class Run:
    """Everything the loop needs, built once by `setup`."""

    config: TrainConfig
    model_config: ModelConfig
    d: Dist
    out: Path
    model: Talk2Face
    runner: torch.nn.Module  # LossModel, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    stream: TrainStream
    validation: ValidationSet
    accum: int  # micro-batches per process per optimiser step
    autocast: torch.autocast
    logger: Logger
    start: int  # the step the run continues from (0: a new run)


def setup(shards_dir: Path, out: Path, plan: Plan, d: Dist, progress: bool = True) -> Run:
    """Data, model, optimiser, schedule and logs for `plan`; a resumed run's state restored exactly."""
    config, model_config = plan.config, plan.model_config
    accum = accumulation_steps(config, d.world)
    check_fits_memory(model_config, config.micro_batch_size, device_memory(d.device), f"--config {config.model}")
    weights = read_start_weights(plan)
    if d.main and plan.record_model_config:  # the weights brought their config: --resume finds the same one
        save_config(model_config, Path(config.model))
    layouts = Layouts(model_config, TextTokenizer.for_config(model_config))
    total_streams = config.batch_size // config.micro_batch_size
    mine = range(d.rank * accum, (d.rank + 1) * accum)
    stream = TrainStream(shards_dir, layouts, config.data, config.micro_batch_size, mine, total_streams, config.seed)
    validation = ValidationSet(shards_dir, layouts, config.data, config.seed)
    torch.manual_seed(config.seed)
    model = build_model(model_config, weights, d.device)
    optimizer = build_optimizer(model, config.optim)
    schedule = build_schedule(optimizer, config.optim, config.max_steps)
    torch.manual_seed(config.seed + 1 + d.rank)  # dropout differs per process
    start = restore(plan, stream, optimizer, schedule, d, total_streams) if plan.resume_from else 0
    if d.main:
        write_json(config.to_dict(), out / "train-config.json")
        logs = checkpoint.log_files(out)
        truncate_log(logs["log"], start)
        truncate_log(logs["val"], start)
    logger = Logger(out, d, model_config, model.num_parameters(), config, start, progress)
    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=d.device.type == "cuda" or config.cpu_bf16)
    return Run(
        config,
        model_config,
        d,
        out,
        model,
        wrap(model, config, d),
        optimizer,
        schedule,
        stream,
        validation,
        accum,
        autocast,
        logger,
        start,
    )


def read_start_weights(plan: Plan) -> dict | None:
    if plan.weights_from is None:
        return None
    state = read_weights(plan.weights_from)[0]
    check_state_dict(state, plan.model_config, str(plan.weights_from))
    return state


def build_model(config: ModelConfig, weights: dict | None, device: torch.device) -> Talk2Face:
    with torch.device("meta") if weights is not None else contextlib.nullcontext():
        model = Talk2Face(config)
    if weights is not None:
        model.load_state_dict(weights, strict=True, assign=True)
    return model.to(device).train()


def wrap(model: Talk2Face, config: TrainConfig, d: Dist) -> torch.nn.Module:
    runner = LossModel(model)
    if config.compile:
        runner = torch.compile(runner)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(runner, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    return runner


# ----------------------------------------------------------------------------- 5. the loop
def train(
    shards_dir: Path,
    out: Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    init_from: Path | None = None,
    reschedule: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    **overrides,
) -> dict:
    """Train (or continue) a run in `out` on `shards_dir`; returns a summary (on every rank).

    The settings are `config`'s values that differ from TrainConfig's defaults plus `overrides` (e.g. `lr=1e-3`,
    `max_steps=600`), decided by `trainer.run.resolve` as the CLI's are. `stop_at` ends the run after that step
    with a checkpoint, as a killed or time-limited job would (the schedule still spans `max_steps`).
    """
    d = setup_distributed()
    given = {**given_values(config), **overrides}
    with contextlib.ExitStack() as held:
        if d.main:  # one writer per run folder, as every stage
            held.enter_context(folder_lock(Path(out), "train"))
        run = setup(shards_dir, Path(out), resolve(out, resume, init_from, given, reschedule, shards_dir), d, progress)
        held.callback(run.logger.close)
        config, last, metrics = run.config, min(run.config.max_steps, stop_at or run.config.max_steps), {}
        for step in range(run.start + 1, last + 1):
            metrics = train_step(run, step)
            if step % config.log_every == 0 or step == last:
                run.logger.step(step, metrics)
            if run.validation and (step % config.val_every == 0 or step == config.max_steps):
                run.logger.validation(step, validate(run))
            if step % config.save_every == 0 or step == last:
                save(run, step)
    return {
        "out": str(out),
        "rank": d.rank,
        "steps": last,
        "resumed_from": run.start,
        "loss": metrics.get("loss", math.nan),
        "checkpoint": str(checkpoint.latest(Path(out))),
        "world_size": d.world,
        "accumulation": run.accum,
        "parameters": run.model.num_parameters(),
    }


def train_step(run: Run, step: int) -> dict:
    """One optimiser step: accumulate the micro-batches, check the loss, clip, step. Its figures, summed over
    processes: mean loss, lr used, gradient norm, real tokens, padding share, seconds."""
    started, d = time.perf_counter(), run.d
    sums = torch.zeros(2, device=d.device)  # loss sum over micro-batches, micro-batches
    tokens, padding = 0, 0.0
    for k in range(run.accum):
        batch = run.stream.next_batch(k)
        tokens += batch["real_tokens"]
        padding += batch["padding"] / run.accum
        args = [batch[n].to(d.device, non_blocking=True) for n in ("tokens", "segments", "labels")]
        sync = contextlib.nullcontext() if d.world == 1 or k == run.accum - 1 else run.runner.no_sync()
        with sync, run.autocast:
            loss = run.runner(*args)
        (loss / run.accum).backward()
        sums += torch.stack([loss.detach().float(), torch.ones((), device=d.device)])
    totals = all_sum(torch.cat([sums, torch.tensor([tokens, padding], device=d.device, dtype=torch.float32)]), d)
    grad_clip = run.config.optim.grad_clip
    parameters = run.model.parameters()
    norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip) if grad_clip > 0 else get_total_norm(run.model)
    metrics = {
        "loss": (totals[0] / totals[1]).item(),
        "lr": run.optimizer.param_groups[0]["lr"],
        "grad_norm": norm.item(),
        "tokens": int(totals[2].item()),
        "padding": totals[3].item() / d.world,
    }
    check_finite(run, step, metrics)
    run.optimizer.step()
    run.schedule.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {**metrics, "seconds": time.perf_counter() - started}


def get_total_norm(model: Talk2Face) -> torch.Tensor:
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])


def check_finite(run: Run, step: int, metrics: dict) -> None:
    """A NaN or infinite loss or gradient stops the run before the optimiser step: nothing bad is ever saved."""
    if math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"]):
        return
    good = checkpoint.latest(run.out)
    kept = f"the last checkpoint ({good.name}) is untouched" if good else "no checkpoint was written"
    raise UserError(
        f"step {step}: the training loss is {metrics['loss']} (gradient norm {metrics['grad_norm']}, "
        f"lr {metrics['lr']:.3g}); the run stops here and {kept}; try a lower --lr"
    )


def restore(plan: Plan, stream: TrainStream, optimizer, schedule, d: Dist, total_streams: int) -> int:
    config = plan.config
    state, optimizer_state = checkpoint.load_training_state(plan.resume_from)
    check_state(state["data"], total_streams, config.micro_batch_size, config.seed)
    stream.load_state(state["data"]["streams"])
    optimizer.load_state_dict(optimizer_state)
    schedule.load_state_dict(state["schedule"])
    if plan.rescheduled_from is not None:  # --reschedule: the rest of the run follows the schedule over max_steps
        reschedule(optimizer, schedule)
        log.warning(
            "the schedule now spans %d steps (was %d); the lr of step %d is %.3g",
            config.max_steps,
            plan.rescheduled_from,
            state["step"] + 1,
            optimizer.param_groups[0]["lr"],
        )
    if state["world_size"] == d.world:
        torch.set_rng_state(state["rng"][d.rank]["torch"])
        if d.device.type == "cuda" and state["rng"][d.rank].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"][d.rank]["cuda"], d.device)
    else:
        log.warning(
            "resuming %d process(es) from a checkpoint of %d: the data continues exactly, dropout is reseeded",
            d.world,
            state["world_size"],
        )
        torch.manual_seed(config.seed + 1 + d.rank + 1000 * state["step"])
    return state["step"]


def save(run: Run, step: int) -> None:
    """Gather every process's data streams and RNG, then rank 0 writes the checkpoint; everyone waits."""
    d = run.d
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(d.device) if d.device.type == "cuda" else None,
    }
    gathered = all_gather((run.stream.state(), rng), d)
    if d.main:
        data = dict(gathered[0][0])
        data["streams"] = {v: s for data_state, _ in gathered for v, s in data_state["streams"].items()}
        state = {
            "step": step,
            "world_size": d.world,
            "schedule": run.schedule.state_dict(),
            "data": data,
            "rng": [r for _, r in gathered],
        }
        checkpoint.save(run.out, step, run.model, run.optimizer, state, run.config.to_dict(), run.config.keep_last)
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


@torch.no_grad()
def validate(run: Run) -> dict:
    """Mean target-token loss per task on the validation set (all processes share the rows)."""
    model, d = run.model, run.d
    model.eval()
    sums = torch.zeros(len(TASKS), 2, device=d.device, dtype=torch.float64)
    for t, task in enumerate(TASKS):
        for batch in run.validation.batches(task, run.config.val_batch_size, d.rank, d.world):
            tokens, segments, labels = (batch[n].to(d.device) for n in ("tokens", "segments", "labels"))
            with run.autocast:
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
    lines = [
        line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


class Logger:
    """Rank 0: RUN/log.jsonl, RUN/val.jsonl, RUN/loss.png, TensorBoard if installed, and the console: a progress
    bar on a terminal, plain lines (one per logged step) when stderr is a file or a pipe."""

    def __init__(
        self,
        out: Path,
        d: Dist,
        model_config: ModelConfig,
        parameters: int,
        config: TrainConfig,
        start: int,
        progress: bool,
    ):
        self.out, self.main, self.max_steps = out, d.main, config.max_steps
        self.flops = flops_per_token(model_config, parameters)
        self.peak = peak_flops(d.device)
        self.peak = self.peak * d.world if self.peak else None
        self.bar = self.tb = None
        self.plain = progress and not sys.stderr.isatty()
        if not self.main:
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=config.max_steps,
            initial=start,
            unit="step",
            desc="train",
            disable=not progress or self.plain,
            dynamic_ncols=True,
        )
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start + 1 if start else None)
        except ImportError:
            pass

    def step(self, step: int, metrics: dict) -> None:
        if not self.main:
            return
        tokens_per_s = metrics["tokens"] / max(metrics["seconds"], 1e-9)
        row = {
            "step": step,
            "loss": round(metrics["loss"], 5),
            "lr": metrics["lr"],
            "grad_norm": round(metrics["grad_norm"], 5),
            "tokens_per_s": round(tokens_per_s, 1),
            "padding": round(metrics["padding"], 4),
            "seconds": round(metrics["seconds"], 4),
        }
        shown = {
            "loss": f"{row['loss']:.4f}",
            "lr": f"{row['lr']:.2e}",
            "grad": f"{row['grad_norm']:.3g}",
            "tok/s": f"{tokens_per_s:,.0f}",
            "pad": f"{row['padding']:.1%}",
        }
        if self.peak:
            row["mfu"] = round(self.flops * tokens_per_s / self.peak, 4)
            shown["mfu"] = f"{row['mfu']:.1%}"
        with open(checkpoint.log_files(self.out)["log"], "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb:
            for k in ("loss", "lr", "grad_norm", "tokens_per_s", "padding"):
                self.tb.add_scalar(f"train/{k}", row[k], step)
        if self.plain:
            self.say(f"step {step}/{self.max_steps} " + " ".join(f"{k} {v}" for k, v in shown.items()))
        self.bar.set_postfix(shown, refresh=False)
        self.bar.n = step
        self.bar.refresh()

    def validation(self, step: int, losses: dict) -> None:
        if not self.main:
            return
        with open(checkpoint.log_files(self.out)["val"], "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "val_loss": losses}) + "\n")
        if self.tb:
            for task, value in losses.items():
                self.tb.add_scalar(f"val/{task}", value, step)
        plot_losses(self.out)
        if not self.bar.disable or self.plain:
            self.say(
                f"step {step}/{self.max_steps} validation loss "
                + ", ".join(f"{task} {value:.4f}" for task, value in losses.items())
            )

    def say(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)

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

    logs = checkpoint.log_files(out)
    rows = (
        [json.loads(line) for line in logs["log"].read_text(encoding="utf-8").splitlines() if line]
        if logs["log"].is_file()
        else []
    )
    vals = [json.loads(line) for line in logs["val"].read_text(encoding="utf-8").splitlines() if line]
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
    with atomic_path(logs["plot"]) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
