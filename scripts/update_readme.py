"""Rewrite README.md's dataset section from the manifests (tests/test_readme.py fails when it is stale)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import DATASETS
from manifests.readme import datasets_markdown, replace_block

readme = ROOT / "README.md"
readme.write_text(replace_block(readme.read_text(encoding="utf-8"), datasets_markdown(DATASETS)), encoding="utf-8")
print(f"updated {readme}")
