"""What a training run is: its settings (TrainConfig) and the one place that decides them.

    plan = resolve(out, resume=False, init_from=None, overrides={"max_steps": 300, "model": "tiny"})
    plan = resolve(out, resume=True, init_from=None, overrides={"max_steps": 600}, reschedule=True)

The rules, all here:
  - a new run: TrainConfig's defaults, then the given values; the model config is `--config` (a preset
    from `trainer/configs/`, fitted to the shards' VQGAN geometry by `trainer.data.fit_to_shards`, or a file);
  - `--init-from`: weights that carry their config (our checkpoints and exports) bring it, and an explicitly
    given `--config` must agree with it (only runtime fields such as `attention` may differ); a plain
    released `.bin` carries none and takes `--config` (with `numbers=whole`, as the released weights saw);
    a brought config differing from `--config` is recorded in RUN/init-model-config.json for `--resume`;
  - `--resume`: the run's `train-config.json` and the checkpoint's own model config, read once each. Given
    values that equal the run's are fine; how the run is watched and saved may change (RESUME_FREE; also
    `--skip-bad-shards`: intact shards read the same with it, and it lets a run go on past a shard damaged
    since); `--max-steps` only with `--reschedule` (the warm-up/decay schedule is fixed at the start
    otherwise); everything that shapes the optimiser or the data stream (lr, batch sizes, seed, `--datasets`,
    the other data settings) is refused, each named, in one line.
The CLI and the library (`trainer.train.train`) both go through `resolve`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError
from trainer import checkpoint, weights
from trainer.config import PRESETS, ModelConfig, check_keys, field_type_problems, load_config
from trainer.data import DataConfig, fit_to_shards
from trainer.optim import OptimConfig

log = logging.getLogger(__name__)
INIT_CONFIG_FILE = "init-model-config.json"  # the model config that --init-from weights brought
RESUME_FREE = (
    "compile",
    "cpu_bf16",
    "log_every",
    "save_every",
    "val_every",
    "keep_last",
    "val_batch_size",
    "skip_bad_shards",
)
OPTIM_KEYS = tuple(f.name for f in dataclasses.fields(OptimConfig))
DATA_KEYS = tuple(f.name for f in dataclasses.fields(DataConfig))
POSITIVE = ("batch_size", "micro_batch_size", "max_steps", "save_every", "log_every", "val_every", "val_batch_size")


@dataclass(frozen=True)
class TrainConfig:
    """A run's settings: the only place their defaults are written (the CLI shows these)."""

    model: str = "paper"  # model config: a preset in trainer/configs/ (paper | demo | tiny) or a JSON file
    batch_size: int = 192  # global batch (rows per optimiser step, all processes together), the paper's
    micro_batch_size: int = 24  # rows per process per forward pass; a multiple of 4 (the tasks)
    max_steps: int = 500_000  # the paper's
    save_every: int = 1000
    keep_last: int = 3  # checkpoints kept; 0 = all
    log_every: int = 1
    val_every: int = 1000
    val_batch_size: int = 32
    seed: int = 1234
    compile: bool = False  # torch.compile the model
    cpu_bf16: bool = False  # bf16 autocast on the CPU too (always on CUDA)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self):
        problems = field_type_problems(self) + field_type_problems(self.optim) + field_type_problems(self.data)
        if not problems:
            problems = [f"{option(k)} {getattr(self, k)}: must be at least 1" for k in POSITIVE if getattr(self, k) < 1]
            problems += [f"--keep-last {self.keep_last}: must be 0 (keep all) or more"] if self.keep_last < 0 else []
            problems += optim_problems(self.optim)
        if problems:
            raise UserError("; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict, where: str = "train config") -> TrainConfig:
        """From `train-config.json`: an unknown key, a missing entry or a wrong type is one line naming the field."""
        check_keys(cls, values, where, what="train config")
        values = dict(values)
        optim, data = values.pop("optim", {}), values.pop("data", {})
        check_keys(OptimConfig, optim, where, what="optim config")
        check_keys(DataConfig, data, where, what="data config")
        optim = dict(optim, betas=tuple(optim["betas"])) if isinstance(optim.get("betas"), list) else optim
        try:
            return cls(**values, optim=OptimConfig(**optim), data=DataConfig(**data))
        except (UserError, TypeError) as e:
            raise UserError(f"{where}: {e}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def optim_problems(optim: OptimConfig) -> list[str]:
    problems = []
    if not (math.isfinite(optim.lr) and optim.lr > 0):
        problems.append(f"--lr {optim.lr}: must be a positive finite number")
    if not (isinstance(optim.betas, tuple) and len(optim.betas) == 2 and all(0 <= b < 1 for b in optim.betas)):
        problems.append(f"betas {optim.betas}: must be two numbers in [0, 1)")
    for name in ("eps", "weight_decay", "warmup_fraction", "grad_clip"):
        value = getattr(optim, name)
        if not (math.isfinite(value) and value >= 0) or (name == "warmup_fraction" and value > 1):
            bound = " and <= 1" if name == "warmup_fraction" else ""
            problems.append(f"{name} {value}: must be a finite number >= 0{bound}")
    return problems


def option(key: str) -> str:
    """The command-line spelling of a setting."""
    return "--config" if key == "model" else "--" + key.replace("_", "-")


# ----------------------------------------------------------------------------- given values
def given_values(config: TrainConfig | None) -> dict:
    """A library caller's TrainConfig as overrides: the settings that differ from the defaults count as given."""
    if config is None:
        return {}
    defaults = flatten(TrainConfig())
    return {k: v for k, v in flatten(config).items() if v != defaults[k]}


def flatten(config: TrainConfig) -> dict:
    """Every setting by its own flat name (the optimiser's and the data stream's too, e.g. `lr`, `datasets`)."""
    top = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in ("optim", "data")}
    optim, data = {k: getattr(config.optim, k) for k in OPTIM_KEYS}, {k: getattr(config.data, k) for k in DATA_KEYS}
    return {**top, **optim, **data}


def apply(base: TrainConfig, overrides: dict) -> TrainConfig:
    unknown = sorted(set(overrides) - set(flatten(base)))
    if unknown:
        raise UserError(f"unknown training setting {', '.join(unknown)}; expected some of {', '.join(flatten(base))}")
    optim = {k: v for k, v in overrides.items() if k in OPTIM_KEYS}
    data = {k: v for k, v in overrides.items() if k in DATA_KEYS}
    top = {k: v for k, v in overrides.items() if k not in OPTIM_KEYS + DATA_KEYS}
    return dataclasses.replace(
        base, **top, optim=dataclasses.replace(base.optim, **optim), data=dataclasses.replace(base.data, **data)
    )


# ----------------------------------------------------------------------------- the decision
@dataclass(frozen=True)
class Plan:
    """What `resolve` decided: the settings, the model config and where the starting weights come from."""

    config: TrainConfig
    model_config: ModelConfig
    weights_from: Path | None = None  # a checkpoint folder (resume), the --init-from path, or None (random)
    resume_from: Path | None = None  # the checkpoint folder whose optimiser, schedule and streams continue
    record_model_config: bool = False  # write RUN/init-model-config.json (the config --init-from brought)
    rescheduled_from: int | None = None  # the schedule's old length when --reschedule changed --max-steps


def resolve(
    out: Path,
    resume: bool,
    init_from: Path | None,
    overrides: dict,
    reschedule: bool = False,
    shards_dir: Path | None = None,
) -> Plan:
    """Decide the run's TrainConfig and ModelConfig (the rules are in this module's docstring); a preset is
    fitted to the geometry of the shards in `shards_dir` (where given) before any comparison."""
    out = Path(out)
    folder = checkpoint.latest(out)
    if resume and init_from is not None:
        raise UserError("--resume and --init-from exclude each other")
    if resume and folder is None:
        raise UserError(f"--resume: {out} holds no checkpoint")
    if not resume and folder is not None:
        raise UserError(f"{out} already holds checkpoints ({folder.name}); pass --resume or use a new --out")
    if reschedule and not resume:
        raise UserError("--reschedule only applies to --resume (a new run's schedule spans its --max-steps)")
    if "datasets" in overrides:  # "cacd,celeba", a list or a tuple: compared as DataConfig holds it
        overrides = {**overrides, "datasets": DataConfig(datasets=overrides["datasets"]).datasets}
    if resume:
        return _resume_plan(folder, overrides, reschedule, shards_dir)
    config = apply(TrainConfig(), overrides)
    if init_from is None:
        return Plan(config, model_config_of(config.model, shards_dir))
    return _init_plan(out, Path(init_from), config, "model" in overrides, shards_dir)


def model_config_of(name: str, shards_dir: Path | None) -> ModelConfig:
    """`--config`'s model config; a preset's image tokens, image vocabulary and sequence length follow the shards."""
    config = load_config(name)
    if shards_dir is not None and str(name) in PRESETS:
        config = fit_to_shards(config, shards_dir, derive=True)
    return config


def _resume_plan(folder: Path, overrides: dict, reschedule: bool, shards_dir: Path | None) -> Plan:
    saved = TrainConfig.from_dict(checkpoint.read_train_config(folder), str(folder / checkpoint.CONFIG_FILE))
    step = checkpoint.read_step(folder)
    carried = weights.read_config(folder)[0]
    if carried is None:
        raise UserError(f"{folder}: the checkpoint holds no model config ({weights.CONFIG_FILE})")
    problems = resume_problems(flatten(saved), overrides, step, reschedule)
    model_config = carried
    if overrides.get("model", saved.model) != saved.model:
        try:
            given = model_config_of(overrides["model"], shards_dir)
            model_config = weights.resolve_config(carried, given, f"--config {overrides['model']}")
        except UserError as e:
            problems.append(str(e))
    if problems:
        raise UserError(f"--resume {folder}: " + "; ".join(problems))
    config = apply(saved, {k: v for k, v in overrides.items() if k != "model"})
    if step >= config.max_steps:
        raise UserError(
            f"--resume {folder}: the run is complete ({step} of {config.max_steps} steps); "
            "give a larger --max-steps with --reschedule to train on"
        )
    rescheduled = saved.max_steps if config.max_steps != saved.max_steps else None
    return Plan(config, model_config, weights_from=folder, resume_from=folder, rescheduled_from=rescheduled)


def resume_problems(saved: dict, overrides: dict, step: int, reschedule: bool) -> list[str]:
    """What a resumed run may not change, each named; an empty list when the overrides may apply."""
    problems = []
    for key, value in overrides.items():
        if key == "model" or key in RESUME_FREE or value == saved.get(key):
            continue
        if key == "max_steps":
            if not reschedule:
                problems.append(
                    f"--max-steps {value}: the run's warm-up/decay schedule spans {saved[key]} steps; "
                    "pass --reschedule to recompute it over the new length"
                )
            elif value <= step:
                problems.append(f"--max-steps {value}: the run already took {step} steps")
        elif key in OPTIM_KEYS:
            problems.append(
                f"{option(key)} {value} cannot change on --resume (the restored optimiser and schedule "
                f"carry the run's {saved[key]}); start a new run with --init-from the checkpoint"
            )
        else:
            problems.append(
                f"{option(key)} {shown(value)} cannot change on --resume (the run has {shown(saved[key])} "
                "and its data stream depends on it); start a new run with --init-from the checkpoint"
            )
    if reschedule and overrides.get("max_steps", saved["max_steps"]) == saved["max_steps"]:
        problems.append(f"--reschedule needs a new --max-steps (the schedule spans {saved['max_steps']} steps)")
    return problems


def shown(value) -> str:
    """A setting as the command line writes it (`--datasets cacd,celeba`; none chosen: all)."""
    return (",".join(value) or "all") if isinstance(value, tuple) else str(value)


def _init_plan(out: Path, init_from: Path, config: TrainConfig, model_given: bool, shards_dir: Path | None) -> Plan:
    carried, plain = weights.read_config(init_from)
    given = model_config_of(config.model, shards_dir)
    if carried is None:
        if plain and given.numbers != "whole":
            log.warning(
                "%s: the released weights were trained with whole numbers; fine-tuning with numbers=whole", init_from
            )
            given = given.replace(numbers="whole")
        return Plan(config, given, weights_from=init_from)
    model_config = weights.resolve_config(carried, given if model_given else None, f"--init-from {init_from}")
    if model_config == given:
        return Plan(config, model_config, weights_from=init_from)
    recorded = dataclasses.replace(config, model=str((out / INIT_CONFIG_FILE).resolve()))
    return Plan(recorded, model_config, weights_from=init_from, record_model_config=True)
