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
    """Write step-NNNNNNN/ atomically, point `latest` at it, and delete all but the newest `keep`."""
    final = step_folder(run, step)
    remove_temporaries(final.with_name("step-*"))  # left by killed saves of any step: never a checkpoint
    with atomic_folder(final) as tmp:
        weights.export(model, tmp)
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save(state, tmp / STATE_FILE)
        write_json(train_config, tmp / CONFIG_FILE)
    write_text(final.name + "\n", final.parent / LATEST)
    for old in sorted(all_steps(run))[:-keep] if keep > 0 else []:
        shutil.rmtree(step_folder(run, old), ignore_errors=True)
    return final


def log_files(run: Path) -> dict[str, Path]:
    """The run's logs: `log` (a JSON line per logged step), `val` (per validation) and `plot` (loss.png)."""
    return {"log": Path(run) / LOG_FILE, "val": Path(run) / VAL_LOG_FILE, "plot": Path(run) / LOSS_PLOT}


def all_steps(run: Path) -> list[int]:
    folder = Path(run) / CHECKPOINTS
    return sorted(int(m.group(1)) for p in folder.glob("step-*") if (m := _STEP.match(p.name))) if folder.is_dir() else []


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
    """(trainer state, optimizer state, train config) of a checkpoint folder."""
    folder = Path(folder)
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        optimizer = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise UserError(f"{folder}: not a complete training checkpoint ({Path(e.filename).name} missing)") from None
    except Exception as e:  # noqa: BLE001 - a damaged file: one line
        raise UserError(f"{folder}: unreadable training checkpoint ({first_line(e)})") from None
    return state, optimizer, config
