"""trainer.fid: torchmetrics' FID/IS over given features against the reference formulas, and the refusals
(missing file, another file). The library's InceptionV3 with random weights in the real file format runs in
tests/test_evaluate_fid.py only (~96 MB of weights, seconds per face on a CPU)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from common.errors import UserError
from trainer import fid


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance as pytorch-fid writes it (scipy's matrix square root)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def features(pool: np.ndarray, classes: int = 8) -> fid.Features:
    return fid.Features(torch.from_numpy(pool), torch.zeros(len(pool), classes, dtype=torch.float64))


def test_frechet_distance_is_the_reference_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(0.5, 1.3, size=(50, 6))
    assert fid.frechet_distance(features(a), features(b)) == pytest.approx(reference_fid(a, b), rel=1e-6)
    assert fid.frechet_distance(features(a), features(a)) == pytest.approx(0.0, abs=1e-6)


def certain(classes: torch.Tensor) -> fid.Features:
    """Faces whose logits name one class each with certainty."""
    logits = torch.full((len(classes), 4), -50.0, dtype=torch.float64)
    logits[torch.arange(len(classes)), classes] = 50.0
    return fid.Features(torch.zeros(len(classes), 3, dtype=torch.float64), logits)


def test_inception_score_is_the_number_of_equally_used_certain_classes():
    assert fid.inception_score(certain(torch.zeros(40, dtype=torch.long)))[0] == pytest.approx(1.0)
    mean, std = fid.inception_score(certain(torch.arange(2000) % 4))  # 10 splits of 200: close to 4
    assert mean == pytest.approx(4.0, rel=0.02) and std < 0.1
    assert fid.inception_score(certain(torch.arange(2000) % 4)) == (mean, std)  # the split shuffle is seeded


def test_fid_needs_two_faces_a_side():
    with pytest.raises(UserError, match="at least 2 real and 2 generated"):
        fid.frechet_distance(features(np.zeros((1, 3))), features(np.zeros((5, 3))))


def test_missing_or_wrong_weights_are_one_line(tmp_path):
    with pytest.raises(UserError, match="not found; download https://.*weights-inception-2015-12-05") as e:
        fid.load_inception(tmp_path / "absent.pth")
    assert "\n" not in str(e.value)
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not the InceptionV3 of pt_inception-2015-12-05"):
        fid.load_inception(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a PyTorch state dict"):
        fid.load_inception(tmp_path / "junk.pth")
    torch.save({"a": object()}, tmp_path / "pickle.pth")  # arbitrary objects are refused (weights_only)
    with pytest.raises(UserError, match="not a PyTorch state dict"):
        fid.load_inception(tmp_path / "pickle.pth")
