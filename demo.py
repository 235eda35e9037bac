"""The built-in demo: every stage of the pipeline on sample data written in each dataset's real format.

    python cli.py demo --out demo/
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from converters import DATASETS
from converters.convert_all import convert_all, format_table
from converters.fixtures import writer


def available_datasets() -> list[str]:
    """Datasets whose converter and fixture writer are both present."""
    return [n for n in DATASETS
            if importlib.util.find_spec(f"converters.{n}") and importlib.util.find_spec(f"converters.fixtures.{n}")]


def write_samples(root: Path) -> list[str]:
    names = available_datasets()
    for name in names:
        writer(name).write_sample(root / name)
    return names


def run_demo(out: Path) -> str:
    out = Path(out)
    write_samples(out / "datasets")
    report = ["== convert all", format_table(convert_all(out / "datasets", out / "converted"))]
    return "\n".join(report)
