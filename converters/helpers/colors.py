"""RGB -> the nearest CSS3 colour name, written as words (`188,143,142` -> `rosy brown`).

Talk2Face names colours by the closest entry of the "RGB color codes chart", which is the CSS3
list. Nearest means the smallest squared RGB distance, computed for all inputs against all 138
distinct CSS3 colours at once. The word split of each name is data (`css3_words.yaml`).

Ties are broken deterministically: the palette is ordered by CSS3 name and the first nearest entry
wins. So a colour with two names is always named by the alphabetically first one (aqua, not cyan;
fuchsia, not magenta; gray, not grey), and a point equidistant from two colours gets the
alphabetically first of them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pyarrow as pa
import webcolors
import yaml

WORDS_FILE = Path(__file__).with_name("css3_words.yaml")


@functools.cache
def palette() -> tuple[np.ndarray, tuple[str, ...]]:
    """The distinct CSS3 colours as a (138, 3) float array and their names in words, by name."""
    words = yaml.safe_load(WORDS_FILE.read_text(encoding="utf-8"))
    rgbs, names, seen = [], [], set()
    for name in sorted(webcolors.names("css3")):
        rgb = tuple(webcolors.name_to_rgb(name, spec="css3"))
        if rgb in seen:  # the second name of a colour (cyan, magenta, grey spellings) is never chosen
            continue
        seen.add(rgb)
        rgbs.append(rgb)
        names.append(words[name])
    return np.array(rgbs, dtype=np.float64), tuple(names)


def nearest_names(rgb) -> pa.Array:
    """The nearest colour name (in words) for each row of an (n, 3) RGB array; rows with NaN give null."""
    rgb = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    colours, names = palette()
    valid = np.isfinite(rgb).all(axis=1)
    # |a - b|^2 = |a|^2 - 2 a.b + |b|^2, all inputs against the whole palette in one matrix product
    distance = (rgb[valid] ** 2).sum(1)[:, None] - 2 * rgb[valid] @ colours.T + (colours**2).sum(1)[None, :]
    index = np.full(len(rgb), -1, dtype=np.int64)
    index[valid] = np.argmin(np.round(distance, 6), axis=1)  # rounding keeps exact ties exact
    return pa.array(names, pa.string()).take(pa.array(index, mask=~valid))


def nearest_name(rgb) -> str | None:
    """The nearest colour name for one RGB triple."""
    return nearest_names([rgb])[0].as_py()
