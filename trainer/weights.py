"""Reading and writing model weights: the released `talk2face.bin`, older UER names, and our export folder.

    state, found = read_weights(Path("talk2face.bin"))      # torch.load(weights_only=True): no code runs
    model = load_model(Path("talk2face.bin"))                 # strict: every mismatch named in one UserError
    export(model, Path("talk2face-export/"))                  # model.safetensors + config.json, atomically
    model = load_model(Path("talk2face-export/"))             # config and tokenizer settings come along

The released loader used `load_state_dict(strict=False)`, so a misnamed weight stayed random silently;
ours refuses, naming every missing, unexpected and wrongly shaped key.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from common.errors import UserError, first_line
from common.fileio import atomic_path
from trainer.config import ModelConfig, load_config
from trainer.model import Talk2Face

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METADATA_CONFIG_KEY = "talk2face_config"

# older UER names -> the released (TencentPretrain) names our modules use
UER_NAMES = {
    "embedding.word_embedding.weight": "embedding.word.embedding.weight",
    "embedding.position_embedding.weight": "embedding.pos.embedding.weight",
    "embedding.segment_embedding.weight": "embedding.seg.embedding.weight",
    "target.output_layer.weight": "target.lm.output_layer.weight",
}
FORMATS = {
    "released": "released (TencentPretrain names)",
    "uer": "older UER names",
    "ours": "talk2face export (safetensors)",
}


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str, ModelConfig | None]:
    """The state dict under our names, the format found (`released`, `uer`, `ours`) and any config it carries."""
    path = Path(path)
    if path.is_dir():
        return _read_export(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    state = _torch_load(path)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a model state dict (expected a mapping of names to tensors)")
    found = "uer" if any(k in UER_NAMES for k in state) else "released"
    return {UER_NAMES.get(k, k): v for k, v in state.items()}, found, None


def read_config(path: Path) -> tuple[ModelConfig | None, bool]:
    """The model config a checkpoint carries, read without its tensors, and whether it is a plain state dict
    (a released or UER `.bin`, which carries none)."""
    path = Path(path)
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            return load_config(path / CONFIG_FILE), False
        if not (path / WEIGHTS_FILE).is_file():
            raise UserError(f"{path}: no {WEIGHTS_FILE} in this folder (expected a talk2face export)")
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    if path.suffix != ".safetensors":
        return None, True
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(METADATA_CONFIG_KEY)
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a safetensors file ({first_line(e)})") from None
    return _metadata_config(text, path), False


def _metadata_config(text: str | None, path: Path) -> ModelConfig | None:
    if not text:
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} metadata: the model config is not JSON ({e})") from None
    return ModelConfig.from_dict(values, f"{path} metadata")


def _torch_load(path: Path):
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"PK" and head[:1] != b"\x80":
        raise UserError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=head == b"PK")
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: refused to load: it holds more than tensors ({_unpickler_reason(e)})") from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, ImportError) as e:
        raise UserError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {first_line(e)})") from None


def _unpickler_reason(error: Exception) -> str:
    """torch's weights-only refusal is a page of advice; the line naming the refused global is the news."""
    lines = [line.strip() for line in str(error).splitlines()]
    reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
    return reason.split(". Please use")[0][:200]


def _read_export(folder: Path):
    weights, config_file = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if not weights.is_file():
        raise UserError(f"{folder}: no {WEIGHTS_FILE} in this folder (expected a talk2face export)")
    state, found, config = _read_safetensors(weights)
    if config_file.is_file():
        beside = load_config(config_file)
        if config is not None and beside != config:
            raise UserError(
                f"{folder}: {CONFIG_FILE} disagrees with the config inside {WEIGHTS_FILE}: "
                f"{config_differences(config, beside)}"
            )
        config = beside
    return state, found, config


def _read_safetensors(path: Path):
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - a safetensors handle
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a safetensors file ({first_line(e)})") from None
    return state, "ours", _metadata_config(metadata.get(METADATA_CONFIG_KEY), path)


# ---------------------------------------------------------------------- strict check
SHOWN_KEYS = 3  # keys named per kind of mismatch unless every key is asked for


def check_state_dict(state: dict[str, torch.Tensor], config: ModelConfig, where: str, all_keys: bool = False) -> None:
    """One UserError naming vocabulary/position mismatches and the missing, unexpected or misshapen keys: their
    counts and the first few (every one with `all_keys`)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Talk2Face(config).state_dict().items()}
    problems = _size_mismatches(state, config)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {list(state[k].shape)} (expected {list(shape)})"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if keys:
            shown = keys if all_keys else keys[:SHOWN_KEYS]
            more = f" and {len(keys) - len(shown)} more" if len(keys) > len(shown) else ""
            problems.append(f"{label} {len(keys)}: {', '.join(shown)}{more}")
    if problems:
        cut = not all_keys and max(len(missing), len(unexpected), len(misshapen)) > SHOWN_KEYS
        hint = " (--all-keys names every key)" if cut else ""
        raise UserError(f"{where}: does not match the model config: {'; '.join(problems)}{hint}")


def _size_mismatches(state, config: ModelConfig) -> list[str]:
    problems = []
    word = state.get("embedding.word.embedding.weight")
    if word is not None and word.ndim == 2 and word.shape[0] != config.vocab_size:
        problems.append(
            f"vocabulary of {word.shape[0]} tokens, the config has {config.vocab_size} "
            f"({config.text_vocab_size} text + {config.image_vocab_size} image)"
        )
    pos = state.get("embedding.pos.embedding.weight")
    if pos is not None and pos.ndim == 2 and pos.shape[0] != config.max_positions:
        problems.append(f"{pos.shape[0]} positions, the config has max_positions {config.max_positions}")
    return problems


RUNTIME_FIELDS = ("attention",)  # how to compute, not what the weights mean: a given config may change them


def config_differences(a: ModelConfig, b: ModelConfig, ignore: tuple[str, ...] = ()) -> str:
    da, db = a.to_dict(), b.to_dict()
    return ", ".join(f"{k} {da[k]!r} vs {db[k]!r}" for k in da if da[k] != db[k] and k not in ignore)


# ---------------------------------------------------------------------- model in, model out
def resolve_config(carried: ModelConfig | None, given: ModelConfig | None, where: str) -> ModelConfig:
    """The checkpoint's own config wins; a given one must then agree (tokenizer settings included)."""
    if carried is not None and given is not None:
        differences = config_differences(carried, given, ignore=RUNTIME_FIELDS)
        if differences:
            raise UserError(f"{where}: the checkpoint was saved with another config: {differences}")
        return carried.replace(**{k: getattr(given, k) for k in RUNTIME_FIELDS})
    return carried or given or load_config("paper")


def load_model(path: Path, config: ModelConfig | None = None, device: str | torch.device = "cpu") -> Talk2Face:
    """Build the model and load a checkpoint into it strictly. A plain .bin gets `config` or the paper's."""
    state, _, carried = read_weights(path)
    config = resolve_config(carried, config, str(path))
    check_state_dict(state, config, str(path))
    with torch.device("meta"):
        model = Talk2Face(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device)


def export(model: Talk2Face, folder: Path) -> Path:
    """`folder/model.safetensors` (config in its metadata) and `folder/config.json`, each written atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={METADATA_CONFIG_KEY: json.dumps(config)})
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def inspect(checkpoint: Path | None, config: ModelConfig | None, all_keys: bool = False) -> dict:
    """What `inspect-model` prints: config, parameter count, key format and check, tokenizer settings."""
    found, where, state = None, "config", None
    if checkpoint is not None:
        state, found, carried = read_weights(checkpoint)
        where = str(checkpoint)
        if carried is None and config is None:
            where += " (no config given or carried: checked against the paper preset; --config names another)"
        config = resolve_config(carried, config, where)
        check_state_dict(state, config, where, all_keys=all_keys)
    config = config or load_config("paper")
    with torch.device("meta"):
        model = Talk2Face(config)
    report = {
        "checkpoint": where if checkpoint else None,
        "key_format": FORMATS.get(found, "none (config only)"),
        "parameters": model.num_parameters(),
        "state_dict_entries": len(model.state_dict()),
        "keys": f"all {len(state)} keys match" if state is not None else "not checked (no checkpoint)",
        "tokenizer": {"vocab": config.vocab, "numbers": config.numbers},
        "config": config.to_dict(),
    }
    if found in ("released", "uer") and config.numbers != "whole":
        report["warning"] = "the released weights were trained with numbers=whole; this config says digits"
    return report
