"""Training checkpoints: `RUN/checkpoints/step-NNNNNNN/`, written atomically, the last k kept.

    step-0000100/
      model.safetensors, config.json   the model export (`trainer.weights.export`): load_model(folder) loads it
      optimizer.pt                     AdamW state
      trainer-state.pt                 step, schedule, data-stream state of every stream, RNG states per process
      train-config.json                the run's TrainConfig
    latest                             a text file naming the newest folder (what --resume reads)
  log.jsonl, val.jsonl, loss.png       the training log, the validation log and their plot (`log_files`)

Every .pt file is read back with `torch.load(weights_only=True)`: plain data and tensors, no code.
The folder is written under a temporary name and published whole (`common.fileio.atomic_folder`), so a
killed run never leaves half a checkpoint. The run holds RUN/.lock for its whole length (rank 0:
`with common.locks.folder_lock(out, "train"):`), so a second `train` on the same RUN is refused and
only the holder removes the temporaries of killed saves.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError

from common.errors import UserError, first_line
from common.fileio import atomic_folder, remove_temporaries, write_json, write_text
from trainer import weights

CHECKPOINTS = "checkpoints"
LATEST = "latest"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer-state.pt"
CONFIG_FILE = "train-config.json"
LOG_FILE, VAL_LOG_FILE, LOSS_PLOT = "log.jsonl", "val.jsonl", "loss.png"
_STEP = re.compile(r"^step-(\d{7})$")


def step_folder(run: Path, step: int) -> Path:
    return Path(run) / CHECKPOINTS / f"step-{step:07d}"


def save(run: Path, step: int, model, optimizer, state: dict, train_config: dict, keep: int) -> Path:
    """Write step-NNNNNNN/ atomically, point `latest` at it, and delete all but the newest `keep`.

    A write that fails (a full disk, a file-size limit) is one UserError; the previous checkpoint stays as it was.
    """
    final = step_folder(run, step)
    remove_temporaries(final.with_name("step-*"))  # left by killed saves of any step: never a checkpoint
    try:
        with atomic_folder(final) as tmp:
            _write_folder(tmp, model, optimizer, state, train_config)
    except (OSError, RuntimeError, ValueError, SafetensorError) as e:  # torch, safetensors: their own types
        previous = latest(run)
        kept = f"the previous checkpoint {previous.name} stays" if previous else "no earlier checkpoint exists"
        raise UserError(f"{final}: the checkpoint could not be written ({first_line(e)}); {kept}") from None
    write_text(final.name + "\n", final.parent / LATEST)
    for old in sorted(all_steps(run))[:-keep] if keep > 0 else []:
        shutil.rmtree(step_folder(run, old), ignore_errors=True)
    return final


def log_files(run: Path) -> dict[str, Path]:
    """The run's logs: `log` (a JSON line per logged step), `val` (per validation) and `plot` (loss.png)."""
    return {"log": Path(run) / LOG_FILE, "val": Path(run) / VAL_LOG_FILE, "plot": Path(run) / LOSS_PLOT}


def _write_folder(tmp: Path, model, optimizer, state: dict, train_config: dict) -> None:
    weights.export(model, tmp)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    torch.save(state, tmp / STATE_FILE)
    write_json(train_config, tmp / CONFIG_FILE)


def all_steps(run: Path) -> list[int]:
    folder = Path(run) / CHECKPOINTS
    return (
        sorted(int(m.group(1)) for p in folder.glob("step-*") if (m := _STEP.match(p.name))) if folder.is_dir() else []
    )


def latest(run: Path) -> Path | None:
    """The folder `latest` names (falling back to the highest step), or None when the run has none."""
    pointer = Path(run) / CHECKPOINTS / LATEST
    if pointer.is_file():
        folder = pointer.parent / pointer.read_text(encoding="utf-8").strip()
        if folder.is_dir():
            return folder
    steps = all_steps(run)
    return step_folder(run, steps[-1]) if steps else None


def is_checkpoint(folder: Path) -> bool:
    return (Path(folder) / STATE_FILE).is_file() and (Path(folder) / weights.WEIGHTS_FILE).is_file()


def load_state(folder: Path) -> tuple[dict, dict, dict]:
    """(trainer state, optimizer state, train config as JSON) of a checkpoint folder."""
    state, optimizer = load_training_state(folder)
    return state, optimizer, read_train_config(folder)


def read_train_config(folder: Path) -> dict:
    """`train-config.json` as JSON (`trainer.run.TrainConfig.from_dict` checks its entries)."""
    return _read(folder, CONFIG_FILE, lambda path: json.loads(path.read_text(encoding="utf-8")))


def read_step(folder: Path) -> int:
    match = _STEP.match(Path(folder).name)
    if not match:
        raise UserError(f"{folder}: not a checkpoint folder (expected step-NNNNNNN)")
    return int(match.group(1))


# trainer-state.pt: what each entry must be
STATE_ENTRIES = {"step": int, "world_size": int, "schedule": dict, "data": dict, "rng": list}


def load_training_state(folder: Path) -> tuple[dict, dict]:
    """(trainer state, optimizer state) of a checkpoint folder, the trainer state's entries checked."""
    state = _read(folder, STATE_FILE, _torch_load)
    where = Path(folder) / STATE_FILE
    if not isinstance(state, dict):
        raise UserError(f"{where}: expected a mapping of trainer state, got {type(state).__name__}")
    for name, kind in STATE_ENTRIES.items():
        if name not in state:
            raise UserError(f"{where}: the entry {name!r} is missing")
        if not isinstance(state[name], kind) or isinstance(state[name], bool):
            raise UserError(f"{where}: {name} must be {kind.__name__}, got {type(state[name]).__name__}")
    unknown = sorted(set(state) - set(STATE_ENTRIES))
    if unknown:
        raise UserError(f"{where}: unknown entry {', '.join(map(str, unknown))}")
    if state["step"] != read_step(folder) or state["world_size"] < 1 or len(state["rng"]) != state["world_size"]:
        raise UserError(
            f"{where}: step {state['step']}, world_size {state['world_size']} and {len(state['rng'])} "
            f"RNG states do not fit the folder {Path(folder).name}"
        )
    return state, _read(folder, OPTIMIZER_FILE, _torch_load)


def _torch_load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _read(folder: Path, name: str, reader):
    try:
        return reader(Path(folder) / name)
    except FileNotFoundError:
        raise UserError(f"{folder}: not a complete training checkpoint ({name} missing)") from None
    except Exception as e:  # noqa: BLE001 - a damaged file: one line
        raise UserError(f"{folder}/{name}: unreadable ({first_line(e)})") from None
