"""Dataset manifests: the facts about each dataset, kept as data beside the converters.

One YAML file per registry name: homepage, citation, access, licence, expected files,
official counts per split, the paper's Table 1 count and the label vocabularies.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

HERE = Path(__file__).parent
REQUIRED_KEYS = ("name", "title", "homepage", "access", "licence", "citation", "files", "counts", "split", "labels")
ACCESS_VALUES = ("public", "by request")


@functools.cache
def load(name: str) -> dict:
    path = HERE / f"{name}.yaml"
    manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    validate(manifest, path)
    return manifest


def validate(manifest: dict, path: Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{path}: manifest lacks {', '.join(missing)}")
    if manifest["name"] != path.stem:
        raise ValueError(f"{path}: name {manifest['name']!r} does not match the file name")
    if manifest["access"] not in ACCESS_VALUES:
        raise ValueError(f"{path}: access must be one of {ACCESS_VALUES}")
    counts = manifest["counts"]
    if not isinstance(counts.get("official"), dict) or not isinstance(counts.get("paper"), int):
        raise ValueError(f"{path}: counts needs official (per split) and paper (an integer)")  # noqa: TRY004 (a bad manifest value)
    if manifest["split"] not in ("official", "none"):
        raise ValueError(f"{path}: split must be 'official' or 'none'")
