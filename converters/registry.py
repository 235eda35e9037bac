"""The registry: every dataset's name, in the order the corpus keeps them, and its converter by name.

A name is the dataset's registry key: its module `converters/datasets/<name>.py` (defining
`CONVERTER`), its manifest `manifests/<name>.yaml` and its fixture writer `converters/fixtures/<name>.py`.
Dataset modules are imported only when asked for, so reading the names costs nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from pathlib import Path

from common.errors import UserError

DATASETS = (
    "celeba",
    "fs2k",
    "affectnet",
    "rafdb",
    "expw",
    "cacd",
    "afad",
    "imdb_wiki",
    "fairface",
    "ffhq_text",
    "mm_celeba_hq",
    "celeba_text_hq",
    "celeba_dialog",
)


def converter_class(name: str):
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
    return importlib.import_module(f"converters.datasets.{name}").CONVERTER


def parse_options(cls, pairs: list[str]):
    """`key=value` strings into the converter's Options dataclass, typed by its annotations."""
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    hints = typing.get_type_hints(cls.Options)
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            known = ", ".join(fields) or "none"
            raise UserError(f"{cls.name}: bad option {pair!r}; expected KEY=VALUE with KEY one of: {known}")
        values[key] = _typed(cls.name, key, raw.strip(), hints[key])
    return cls.Options(**values)


def _typed(dataset: str, key: str, raw: str, hint):
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        if raw.lower() in ("", "none", "null"):
            return None
        hint = args[0]
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        if raw not in [str(c) for c in choices]:
            raise UserError(f"{dataset}: option {key}={raw!r}; expected one of {', '.join(map(str, choices))}")
        return next(c for c in choices if str(c) == raw)
    try:
        if hint is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if hint is Path:
            return Path(raw).expanduser()
        return hint(raw)
    except ValueError:
        raise UserError(f"{dataset}: option {key}={raw!r} is not a valid {getattr(hint, '__name__', hint)}") from None


def converter(name: str, root: Path, options: list[str] | None = None):
    """The converter of dataset `name` for the download at `root`, with its `KEY=VALUE` options."""
    cls = converter_class(name)
    return cls(root, parse_options(cls, options or []))
