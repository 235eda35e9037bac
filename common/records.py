"""The values every stage shares (one definition each)."""
from __future__ import annotations

SPLITS = ("train", "val", "test")
KINDS = ("attributes", "caption")
