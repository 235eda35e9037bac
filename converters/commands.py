"""The commands: `convert` one dataset, and `convert all`: find the datasets present under one folder,
convert each, and tabulate the result.

`--roots DIR` holds one folder per dataset, named as in the registry (case, `-` and `_` ignored:
`CelebA`, `imdb-wiki`), or `--roots FILE.yaml` maps names to paths:

    celeba: /data/celeba
    celeba_dialog: {root: /data/CelebA-Dialog, options: {version: hq}}

Absent datasets are listed as absent, not errors; a dataset that fails is reported and the others go on.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import yaml
from tqdm import tqdm

import manifests
from common.errors import UserError, first_line
from common.locks import folder_lock

from .registry import DATASETS, converter

log = logging.getLogger(__name__)


def convert(name: str, root: Path, out: Path, options: list[str] | None = None) -> dict:
    """Convert one dataset and write its Parquet file, rejects and summary; return the summary."""
    job = converter(name, root, options)
    with folder_lock(out, "convert"):
        return job.run(out)


def _canonical(name: str) -> str:
    return re.sub(r"[-_\s]", "", name).lower()


def find_roots(roots: Path) -> dict[str, tuple[Path, list[str]]]:
    """{dataset: (root, options)} for every dataset present."""
    roots = Path(roots).expanduser()
    if roots.is_file():
        return _roots_from_yaml(roots)
    if not roots.is_dir():
        raise UserError(f"{roots}: not a folder of datasets nor a YAML file mapping dataset names to paths")
    by_canonical = {_canonical(n): n for n in DATASETS}
    found = {}
    for entry in sorted(roots.iterdir()):
        name = by_canonical.get(_canonical(entry.name))
        if name and entry.is_dir() and name not in found:
            found[name] = (entry, [])
    return found


def _roots_from_yaml(path: Path) -> dict[str, tuple[Path, list[str]]]:
    try:
        mapping = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; expected a YAML mapping of dataset names to paths") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or (str(e).strip().splitlines() or ["invalid YAML"])[0]
        raise UserError(f"{where}: not a valid YAML mapping of dataset names to paths ({problem})") from None
    if not isinstance(mapping, dict):
        raise UserError(f"{path}: expected a mapping `dataset: path`, found {type(mapping).__name__}")
    found = {}
    for name, value in mapping.items():
        if name not in DATASETS:
            raise UserError(f"{path}: unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
        if isinstance(value, dict):
            root, options = value.get("root"), [f"{k}={v}" for k, v in (value.get("options") or {}).items()]
        else:
            root, options = value, []
        if not root:
            raise UserError(f"{path}: dataset {name!r} has no path")
        found[name] = (path.parent / Path(str(root)).expanduser(), options)
    return found


def split_options(options: list[str]) -> dict[str, list[str]]:
    """`DATASET.KEY=VALUE` options grouped by dataset."""
    grouped: dict[str, list[str]] = {}
    for option in options:
        name, dot, rest = option.partition(".")
        if not dot or name not in DATASETS:
            raise UserError(
                f"convert all: option {option!r} must be DATASET.KEY=VALUE with DATASET one of: {', '.join(DATASETS)}"
            )
        grouped.setdefault(name, []).append(rest)
    return grouped


def convert_all(roots: Path, out: Path, options: list[str] | None = None) -> list[dict]:
    """Convert every dataset found; one result row per registry name, in registry order."""
    found = find_roots(roots)
    missing = [f"{name}: {root}" for name, (root, _) in found.items() if not root.is_dir()]
    if missing:  # a mistake in the mapping: nothing is converted until it is fixed
        raise UserError(f"{roots}: not a folder: {'; '.join(missing)}")
    extra = split_options(options or [])
    results = []
    with folder_lock(out, "convert"), tqdm(DATASETS, desc="convert", unit="dataset", disable=None) as bar:
        for name in bar:
            counts = manifests.load(name)["counts"]
            row = {"dataset": name, "official": counts["official"].get("total"), "paper": counts["paper"]}
            if name not in found:
                results.append({**row, "status": "absent"})
                continue
            bar.set_postfix_str(name)
            root, file_options = found[name]
            try:
                summary = converter(name, root, file_options + extra.get(name, [])).run(out)
            except UserError as e:
                log.error("%s", e)
                results.append({**row, "status": f"failed: {e}"})
                continue
            except Exception as e:  # a defect in one converter must not cost the user the others
                log.exception("%s: conversion failed", name)
                reason = first_line(e)
                results.append({**row, "status": f"failed: {type(e).__name__}: {reason}"})
                continue
            results.append(
                {
                    **row,
                    "status": "converted",
                    "rows": summary["rows"],
                    "images": summary["images"],
                    "rejects": summary["rejects"]["total"],
                }
            )
    return results


def format_table(results: list[dict]) -> str:
    header = f"{'dataset':15s} {'rows':>10s} {'images':>9s} {'rejects':>8s} {'official':>9s} {'paper':>8s}  status"
    lines = [header, "-" * len(header)]
    for r in results:
        cells = [
            f"{r.get(k, ''):>{w},}" if isinstance(r.get(k), int) else f"{'-':>{w}s}"
            for k, w in (("rows", 10), ("images", 9), ("rejects", 8), ("official", 9), ("paper", 8))
        ]
        lines.append(f"{r['dataset']:15s} " + " ".join(cells) + f"  {r['status']}")
    total = sum(r.get("rows", 0) for r in results)
    lines.append(f"{'total':15s} {total:>10,}")
    return "\n".join(lines)
