"""Random weights for torch-fidelity's InceptionV3 in the state-dict format of pt_inception-2015-12-05.

For tests and benchmarks (nothing can be downloaded there): the network is the library's own; only the values
are random (He-scaled, so that activations do not vanish through 90-odd layers and faces give different
features). The file is ~96 MB, as the real one: write it once per test session.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch


def write_random_inception(path: Path, seed: int = 0) -> Path:
    from trainer.fid import fidelity_module

    cls = fidelity_module("feature_extractor_inceptionv3").FeatureExtractorInceptionV3
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    original = cls.load_state_dict
    cls.load_state_dict = lambda self, state, *args, **kwargs: None  # build the layers, load nothing
    try:
        network = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    finally:
        cls.load_state_dict = original
    generator = torch.Generator().manual_seed(seed)
    state = network.state_dict()
    for value in state.values():
        if value.dim() in (2, 4):  # conv and fc weights
            value.copy_(torch.randn(value.shape, generator=generator) * math.sqrt(2 / value[0].numel()))
    from common.fileio import atomic_path

    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)
    return Path(path)
