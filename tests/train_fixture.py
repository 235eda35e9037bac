"""Small tokenized shards written through facetokens.shards for the trainer's tests: train/val/test, 16 codes a face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facetokens import shards
from facetokens.shards import Face

CODES = 16  # the tiny model's image_tokens
COLOURS = ["black", "blond", "brown", "grey"]


def face(k: int, split: str, captions: int) -> tuple[Face, np.ndarray]:
    gender = "female" if k % 2 else "male"
    hair = COLOURS[k % 4]
    texts = [
        {
            "dataset": "celeba",
            "kind": "attributes",
            "text": f"celeba gender: {gender}; hair: {hair}",
            "attributes": [{"key": "gender", "value": gender}, {"key": "hair", "value": hair}],
        }
    ]
    if k % 5 == 0:
        texts.append(
            {
                "dataset": "fairface",
                "kind": "attributes",
                "text": f"fairface age: {20 + k % 7}",
                "attributes": [{"key": "age", "value": str(20 + k % 7)}],
            }
        )
    texts += [
        {
            "dataset": "mm_celeba_hq",
            "kind": "caption",
            "text": f"a {gender} face with {hair} hair, picture {j}",
            "attributes": None,
        }
        for j in range(captions)
    ]
    rng = np.random.default_rng(k)
    codes = (np.arange(CODES) * 7 + (k % 2) * 500 + (k % 4) * 100 + rng.integers(0, 3, CODES)) % 1024
    return Face(f"celeba/{split}{k:05d}", "celeba", "/nowhere", "x.jpg", None, split, texts), codes


def write_shards(
    out: Path,
    train_faces: int = 60,
    shard_size: int = 7,
    val_faces: int = 12,
    codebook: int = 1024,
    poison_test: bool = True,
) -> Path:
    """SHARDS/ with plan.json; a third of the train faces have captions (some two); test/ is a corrupt tar."""
    out = Path(out)
    shards.check_plan(out, {"format": shards.FORMAT_VERSION, "vqgan": {"config": {"n_embed": codebook}}})
    for split, n in (("train", train_faces), ("val", val_faces)):
        folder = shards.split_dir(out, split)
        folder.mkdir(parents=True, exist_ok=True)
        faces = [face(k, split, captions=(k % 3 == 0) + (k % 9 == 0)) for k in range(n)]
        for index in range(shards.shard_count(n, shard_size)):
            first, last = shards.shard_bounds(index, n, shard_size)
            samples = [shards.sample(f, c) for f, c in faces[first:last]]
            shards.write_shard(folder, index, samples, [], first, last)
    test = shards.split_dir(out, "test")
    test.mkdir(exist_ok=True)
    if poison_test:
        (test / "shard-000000.tar").write_bytes(b"a test shard: training must never open it")
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are too small to share out: one thread is faster (several times on a busy machine).
    A test module imports it to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
