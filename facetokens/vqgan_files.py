"""The VQGAN files users download: read the config, load the weights safely, export safetensors.

Users download taming-transformers' `2021-04-23T18-19-01-project.yaml` (a `Net2NetTransformer`
config whose `first_stage_config` block is the VQGAN) and `last.ckpt` (a Lightning pickle of the
whole transformer; the VQGAN sits under `first_stage_model.` in its `state_dict`). A plain VQGAN
config (`model.target: taming.models.vqgan.VQModel`) and a plain state dict load too, and
`convert_vqgan` writes the weights once as safetensors (config in its metadata): no pickle at all.

Checkpoints are read without Lightning and without running pickled code:
  1. safetensors files are read directly;
  2. pickles go through `torch.load(weights_only=True)`;
  3. where that refuses (a Lightning checkpoint names Lightning classes, numpy scalars...), a
     restricted unpickler rebuilds tensors and plain containers only. Names from a short list of
     data-only libraries (Lightning, numpy, omegaconf...) become inert placeholders; any other
     global (os.system, builtins.eval, ...) is refused before anything runs.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import logging
import pickle
import types
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError

from common.errors import UserError, first_line
from common.fileio import atomic_path, output_file

from .vqgan import VQGAN, VQGANConfig, build_vqgan

log = logging.getLogger(__name__)

FIRST_STAGE_PREFIX = "first_stage_model."
VQGAN_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.")
ENCODER_PREFIXES = ("encoder.", "quant_conv.", "quantize.")
SUPPORTED_TARGETS = ("taming.models.vqgan.VQModel",)
SAFETENSORS_CONFIG_KEY = "vqgan_config"


# ----------------------------------------------------------------------------- config
def read_vqgan_config(path: Path) -> VQGANConfig:
    """The VQGAN of a taming config: a Net2NetTransformer's `first_stage_config`, or a VQModel config."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{path}: cannot read the VQGAN config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a taming config (a mapping with `model:`)")
    model = doc.get("model", doc)
    params = model.get("params") or {}
    target = model.get("target")
    if "first_stage_config" in params:  # Net2NetTransformer: the VQGAN is its first stage
        block = params["first_stage_config"] or {}
        target, params = block.get("target"), block.get("params") or {}
    elif "embed_dim" in model and "params" not in model:  # bare params block
        params = model
    if target is not None and target not in SUPPORTED_TARGETS:
        raise UserError(f"{path}: first stage is {target}; only {', '.join(SUPPORTED_TARGETS)} is supported")
    return VQGANConfig.from_dict(params, where=str(path))


# ----------------------------------------------------------------------------- safe pickle loading
class Ignored:
    """Inert stand-in for an object of a data-only library a checkpoint mentions but we never use.

    It accepts every way pickle builds an object (call, __new__, state, items, appends) and keeps nothing.
    """

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

    def __repr__(self) -> str:
        return f"<ignored {self.qualname}>"


IGNORED_MODULES = (
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "lightning_utilities",
    "torchmetrics",
    "omegaconf",
    "numpy",
    "pathlib",
    "argparse",
)
EXTRA_ALLOWED = {
    "builtins.frozenset": frozenset,
    "builtins.slice": slice,
    "collections.defaultdict": collections.defaultdict,
}
_stub_cache: dict[str, type] = {}


def _allowed_globals() -> dict[str, Any]:
    """What torch's own weights-only loader allows (tensor rebuilders, dtypes, OrderedDict...), plus containers."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = dict(_get_allowed_globals())
    except ImportError:  # older/newer torch: the essentials
        allowed = {
            "collections.OrderedDict": collections.OrderedDict,
            "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
            "torch.Size": torch.Size,
        }
    return {**allowed, **EXTRA_ALLOWED}


def _stub(qualname: str) -> type:
    if qualname not in _stub_cache:
        _stub_cache[qualname] = type(f"Ignored[{qualname}]", (Ignored,), {"qualname": qualname})
    return _stub_cache[qualname]


class CheckpointUnpickler(pickle.Unpickler):
    """Rebuilds tensors and containers; data-only library names become `Ignored`; everything else is refused."""

    _allowed: dict[str, Any] | None = None

    def find_class(self, module: str, name: str):
        if CheckpointUnpickler._allowed is None:
            CheckpointUnpickler._allowed = _allowed_globals()
        qualname = f"{module}.{name}"
        if qualname in self._allowed:
            return self._allowed[qualname]
        if module.split(".")[0] in IGNORED_MODULES:
            return _stub(qualname)
        raise pickle.UnpicklingError(f"refused to load {qualname}: a checkpoint needs only tensors and plain data")


def _restricted_pickle_module() -> types.ModuleType:
    module = types.ModuleType("talk2face_restricted_pickle")
    module.Unpickler = CheckpointUnpickler
    module.load = lambda f, **kwargs: CheckpointUnpickler(f, **kwargs).load()
    module.loads = lambda data, **kwargs: CheckpointUnpickler(io.BytesIO(data), **kwargs).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        log.info("%s: weights-only load refused (%s); retrying with the restricted unpickler", path, first_line(first))
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module())


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[:2] != b"PK" and head[0] != 0x80 and head[8:9] == b"{"


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], VQGANConfig | None]:
    """The VQGAN weights of a checkpoint (Lightning, plain state dict or safetensors) and any config it carries."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: VQGAN checkpoint not found")
    try:
        if _is_safetensors(path) or path.suffix == ".safetensors":
            return _read_safetensors(path)
        obj = _torch_load(path)
    except SafetensorError as e:
        raise UserError(f"{path}: not a readable safetensors file ({first_line(e)})") from None
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: refused to load this checkpoint ({first_line(e)})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise UserError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first_line(e)})") from None
    return first_stage_weights(obj, where=str(path)), None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], VQGANConfig | None]:
    from safetensors import safe_open

    weights = {}
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        for key in f.keys():  # noqa: SIM118 - a safetensors handle, not a dict
            weights[key] = f.get_tensor(key)
    config = metadata.get(SAFETENSORS_CONFIG_KEY)
    return first_stage_weights(weights, where=str(path)), (
        VQGANConfig.from_dict(json.loads(config), str(path)) if config else None
    )


def first_stage_weights(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Select the VQGAN tensors: `state_dict` if wrapped, `first_stage_model.` stripped if present."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise UserError(f"{where}: expected a state dict, found {type(state).__name__}")
    if any(isinstance(k, str) and k.startswith(FIRST_STAGE_PREFIX) for k in state):
        state = {k[len(FIRST_STAGE_PREFIX) :]: v for k, v in state.items() if k.startswith(FIRST_STAGE_PREFIX)}
    weights = {k: v for k, v in state.items() if isinstance(k, str) and k.startswith(VQGAN_PREFIXES)}
    if not weights:
        raise UserError(f"{where}: no VQGAN weights (encoder.*, quantize.*...) found")
    bad = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{where}: {bad[0]} is not a tensor")
    return weights


def weights_digest(weights: dict[str, torch.Tensor], prefixes: tuple[str, ...] = ENCODER_PREFIXES) -> str:
    """sha256 over names, shapes and bytes of the selected tensors: the same model in any file format."""
    h = hashlib.sha256()
    for key in sorted(k for k in weights if k.startswith(prefixes)):
        t = weights[key].detach().contiguous().cpu()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_vqgan(config: Path | VQGANConfig | None, ckpt: Path, *, with_decoder: bool = True) -> VQGAN:
    """Build the VQGAN from a config (path, object, or None = the one in a safetensors file) and load its weights."""
    weights, stored = read_checkpoint(ckpt)
    return build_vqgan(resolve_config(config, stored, ckpt), weights, with_decoder=with_decoder, where=str(ckpt))


def resolve_config(config: Path | VQGANConfig | None, stored: VQGANConfig | None, ckpt: Path) -> VQGANConfig:
    if isinstance(config, VQGANConfig):
        return config
    if config is not None:
        return read_vqgan_config(config)
    if stored is None:
        raise UserError(f"{ckpt}: carries no config; pass the taming project.yaml (--vqgan-config)")
    return stored


def convert_vqgan(config: Path | None, ckpt: Path, out: Path) -> Path:
    """Write the VQGAN weights of `ckpt` as safetensors with the config in the metadata (loads with no pickle)."""
    from safetensors.torch import save_file

    weights, stored = read_checkpoint(ckpt)
    cfg = resolve_config(config, stored, ckpt)
    model = build_vqgan(cfg, weights, with_decoder=True, where=str(ckpt))  # validates shapes before writing
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    try:
        with atomic_path(output_file(out)) as tmp:
            save_file(tensors, str(tmp), metadata={SAFETENSORS_CONFIG_KEY: json.dumps(cfg.to_dict(), sort_keys=True)})
    except SafetensorError as e:
        raise UserError(f"--out {out}: cannot write ({first_line(e)})") from None
    log.info("wrote %s (%d tensors, encoder digest %s)", out, len(tensors), weights_digest(tensors)[:12])
    return Path(out)
