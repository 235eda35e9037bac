"""FID and Inception Score of generated faces against real ones (the paper's Table 2), with library code only.

    inception = load_inception("pt_inception-2015-12-05-6726825d.pth")
    real = extract(inception, real_faces)            # uint8 [N, 256, 256, 3] arrays -> Features
    fake = extract(inception, generated_faces)
    fid, (is_mean, is_std) = frechet_distance(real, fake), inception_score(fake)

The network is torch-fidelity's `FeatureExtractorInceptionV3` (the TF-exact port of the 2015-12-05 Inception
that the original FID and IS used, with its TF1 bilinear resize to 299) and its weights file; the figures are
torchmetrics' `FrechetInceptionDistance` and `InceptionScore` over its 2,048-d pool features and unbiased
1,008-class logits. Each face goes through Inception once; both metrics read the same features.

Why not `import torch_fidelity`: its package `__init__` imports every metric and feature extractor, and
some of those import torchvision, which has no working CPU build here. The Inception module itself needs
only torch and three small helper modules of the package, so `fidelity_module` registers the installed
package without running its `__init__` and imports that module from it (where torchvision works, the
ordinary import is used). torchmetrics itself imports `torch_fidelity.feature_extractor_inceptionv3` at
import time, so the same registration is done first.

The weights file is loaded with `torch.load(weights_only=True)` (torch-fidelity itself unpickles it), checked
against the network's keys and shapes, and handed to the library as an in-memory copy of those tensors.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError, first_line

log = logging.getLogger(__name__)

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
POOL, LOGITS = "2048", "logits_unbiased"
BATCH = 16  # faces through Inception together
IS_SPLITS = 10  # the original Inception Score protocol


@dataclass
class Features:
    pool: torch.Tensor  # [N, 2048] float64
    logits: torch.Tensor  # [N, 1008] float64

    def __len__(self) -> int:
        return len(self.pool)


def fidelity_module(name: str):
    """`torch_fidelity.<name>`, imported without the package `__init__` where that cannot import (no torchvision)."""
    if "torch_fidelity" not in sys.modules:
        try:
            import torch_fidelity  # noqa: F401 - the ordinary way, where torchvision works
        except ImportError as e:
            spec = importlib.util.find_spec("torch_fidelity")
            if spec is None:
                _no_library(e)
            log.info("torch_fidelity's __init__ cannot import (%s): importing its modules directly", first_line(e))
            sys.modules["torch_fidelity"] = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
    try:
        return importlib.import_module(f"torch_fidelity.{name}")
    except ImportError as e:
        _no_library(e)


def _no_library(error: ImportError):
    raise UserError(
        f"--fid needs torch-fidelity and torchmetrics (pip install --no-deps torch-fidelity==0.4.* "
        f"torchmetrics; see docs/reproducing.md): {first_line(error)}"
    ) from None


def metric_classes():
    """torchmetrics' FrechetInceptionDistance and InceptionScore (importable once torch_fidelity is registered)."""
    fidelity_module("feature_extractor_inceptionv3")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore
    except ImportError as e:
        _no_library(e)
    return FrechetInceptionDistance, InceptionScore


def require_weights(path: Path | str | None) -> Path:
    """The Inception weights file, or one UserError line saying what to download."""
    if path is None or not Path(path).is_file():
        where = f"--inception-weights {path}: not found" if path else "--fid needs --inception-weights FILE"
        raise UserError(f"{where}; download {WEIGHTS_URL} (torch-fidelity's {WEIGHTS_NAME}, 91 MB) and pass its path")
    return Path(path)


def load_inception(path: Path | str | None, device: str | torch.device = "cpu"):
    """torch-fidelity's InceptionV3 with the weights in `path`; one UserError line when missing or not that file."""
    path = require_weights(path)
    module = fidelity_module("feature_extractor_inceptionv3")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable or unsafe file is the user's to replace
        raise UserError(f"--inception-weights {path}: not a PyTorch state dict ({first_line(e)})") from None
    _check_state(path, state)
    buffer = io.BytesIO()
    torch.save(state, buffer)  # only the tensors just loaded safely: the library unpickles this copy
    buffer.seek(0)
    try:
        network = module.FeatureExtractorInceptionV3(
            "inception-v3-compat", [POOL, LOGITS], feature_extractor_weights_path=buffer
        )
    except RuntimeError as e:  # load_state_dict: missing or unexpected keys, wrong shapes
        detail = " ".join(str(e).split())
        raise UserError(f"--inception-weights {path}: not the InceptionV3 of {WEIGHTS_NAME} ({detail[:300]})") from None
    return network.to(device)


def _check_state(path, state) -> None:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--inception-weights {path}: expected a state dict of tensors ({WEIGHTS_NAME})")


class _Given(torch.nn.Module):
    """The 'feature extractor' handed to the torchmetrics metrics: the features were already extracted."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@torch.no_grad()
def extract(network, faces: list[np.ndarray], device: str | torch.device = "cpu", batch_size: int = BATCH) -> Features:
    """Pool features and logits of uint8 RGB faces [H, W, 3] (resized to 299 inside, as the library does)."""
    pools, logits = [], []
    for start in range(0, len(faces), batch_size):
        batch = torch.from_numpy(np.stack(faces[start : start + batch_size])).permute(0, 3, 1, 2).contiguous()
        pool, logit = network(batch.to(device))
        pools.append(pool.double().cpu())
        logits.append(logit.double().cpu())
    if not pools:
        return Features(torch.zeros(0, 2048, dtype=torch.float64), torch.zeros(0, 1008, dtype=torch.float64))
    return Features(torch.cat(pools), torch.cat(logits))


def concat(parts: list[Features]) -> Features:
    return Features(torch.cat([p.pool for p in parts]), torch.cat([p.logits for p in parts]))


def frechet_distance(real: Features, fake: Features) -> float:
    """torchmetrics' FID between the two sets of pool features (each needs at least 2 faces)."""
    if len(real) < 2 or len(fake) < 2:
        raise UserError(f"FID needs at least 2 real and 2 generated faces (have {len(real)} and {len(fake)})")
    fid_class, _ = metric_classes()
    metric = fid_class(feature=_Given(real.pool.shape[1]))
    metric.update(real.pool, real=True)
    metric.update(fake.pool, real=False)
    return float(metric.compute())


def inception_score(fake: Features, seed: int = 0) -> tuple[float, float]:
    """torchmetrics' Inception Score (mean, std over 10 splits) of the logits; the split shuffle is seeded."""
    import warnings

    if len(fake) < 1:
        raise UserError("the Inception Score needs at least 1 generated face")
    _, is_class = metric_classes()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = is_class(feature=_Given(fake.logits.shape[1]), splits=IS_SPLITS)
    metric.update(fake.logits)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)
