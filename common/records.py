"""The values every stage shares (one definition each)."""

from __future__ import annotations

SPLITS = ("train", "val", "test")
KINDS = ("attributes", "caption")
DEFAULT_RATIOS = (0.90, 0.05, 0.05)  # train, val, test shares where a dataset has no official split
DEFAULT_SEED = "talk2face"  # the hash seed of those splits
HUB_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}  # what Hugging Face `datasets` calls them
