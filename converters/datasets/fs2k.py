"""FS2K: photos with hair, gender, earring, smile, pose, sketch style and lip/eye/skin colour names.

Reads `anno_train.json` (-> train) and `anno_test.json` (-> test), each one single-line JSON array
of records, and the photos `photo/photo1|2|3/imageNNNN.*`. `image_name` has no extension: the photo
is found in its folder's listing whatever its extension or case. Lip and eye colours are mean RGB
floats; `skin_color` (the README's `skin_patch`) is an [x, y] point, so this converter opens each
photo and averages a patch around the point. Colours are named by `converters.helpers.colors`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from common.errors import UserError

from ..helpers.base import Converter
from ..helpers.colors import nearest_names
from ..helpers.root import IMAGE_EXTENSIONS
from ..helpers.rows import attribute_columns, make_table, prefixed
from ..helpers.tables import NESTED_TOO_DEEPLY, read_text

PHOTO_DIR = "photo"
NAME_KEY = "image_name"
DRAFT_MIN_SIDE = 256  # JPEG draft decoding may shrink a photo, but never below this many pixels


@dataclasses.dataclass
class Options:
    skin_colour: bool = True  # sample the skin colour from the photos (the only reason images are opened)
    patch: int = 21  # side in source pixels of the square averaged around the skin point


class PointOutside(ValueError):
    pass


class FS2K(Converter):
    name = "fs2k"
    Options = Options

    def convert(self):
        labels = self.manifest["labels"]
        if self.options.patch < 1:
            raise UserError(f"fs2k: option patch={self.options.patch}; expected a positive number of pixels")
        parts = [self.read_split(split, filename, labels) for split, filename in labels["split_files"].items()]
        cols = {k: concat([p[k] for p in parts]) for k in parts[0]}
        cols = self.reject_where(cols, cols.pop("malformed"), "malformed record", cols.pop("detail"))
        cols = self.reject_where(cols, cols["missing"] != "", "missing value", cols.pop("missing"))
        cols = self.reject_repeats(cols, cols["name"])
        for key, codes in labels["codes"].items():
            cols = self.map_labels(cols, [key], codes)
        folders, index = self.photo_index()
        cols["image"] = pa.array(
            [index.get(photo_key(n), f"{self.tree.rel(folders[0])}/{n}") for n in cols["name"].to_pylist()], pa.string()
        )
        cols = self.drop_missing_images(cols, folders)
        cols = self.skin_colours(cols)
        yield self.table(cols, labels)

    def read_split(self, split: str, filename: str, labels: dict) -> dict:
        path = self.tree.find_file(filename)
        records = load_records(path)
        self.count_records(len(records))
        fields = [record_fields(r, labels) for r in records]
        values = {key: [f[key] for f in fields] for key in record_fields(None, labels)}
        return {
            "source": pa.array([f"{self.tree.rel(path)}:{i}" for i in range(len(records))], pa.string()),
            "split": pa.array([split] * len(records), pa.string()),
            "malformed": np.array(values.pop("malformed"), dtype=bool),
            "missing": np.array(values.pop("missing"), dtype=object),
            **{key: number_rows(values.pop(key), 3) for key in labels["colours"]},
            "point": number_rows(values.pop("point"), 2),
            **{key: pa.array(column, pa.string()) for key, column in values.items()},  # name, detail, label codes
        }

    def photo_index(self) -> tuple[list[Path], dict[str, str]]:
        """The photo folders (`photo/` first) and `photo1/image0110` (lower case) -> root-relative file."""
        top = self.tree.find_dir(PHOTO_DIR)
        folders = [top] + self.tree.subfolders(top)
        index = {}
        for folder in folders:
            prefix = "" if folder == top else folder.name + "/"
            for name in sorted(self.tree.files(folder)):
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    index.setdefault(photo_key(prefix + name), self.tree.rel(folder / name))
        return folders, index

    def skin_colours(self, cols: dict) -> dict:
        """Mean RGB of the patch around each skin point; rejects unreadable photos.

        A point outside its photo (real: photo3/image0116, (2159, 1192) on 475x340) spoils only the skin
        colour: the record keeps its other labels, the colour is left out of its text, and a note says so.
        """
        n = len(cols["source"])
        cols["skin_color"] = np.full((n, 3), np.nan)
        if not self.options.skin_colour:
            self.notes.append("skin colour not sampled (option skin_colour=false)")
            return cols
        cols["why"], cols["detail"] = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
        images, sources, outside = cols["image"].to_pylist(), cols["source"].to_pylist(), []
        for i in np.flatnonzero(np.isfinite(cols["point"]).all(axis=1)):
            try:
                cols["skin_color"][i] = patch_mean(self.root / images[i], cols["point"][i], self.options.patch)
            except PointOutside as e:
                outside.append(f"{sources[i]}: {e}")
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                cols["why"][i], cols["detail"][i] = "unreadable image", f"{images[i]}: {e}"
        if outside:
            self.notes.append(
                f"skin point outside the photo in {len(outside)} records (e.g. {outside[0]}): "
                "their skin colour is left out of their texts, their other labels kept"
            )
        return self.reject_where(cols, cols["why"] == "unreadable image", "unreadable image", cols["detail"])

    def table(self, cols: dict, labels: dict) -> pa.Table:
        names = {key: nearest_names(cols[key]) for key in [*labels["colours"], "skin_color"]}
        for key, values in names.items():
            if values.null_count and (key != "skin_color" or self.options.skin_colour):
                self.notes.append(
                    f"{labels['keys'][key]}: no usable value (NaN, [] or absent) in {values.null_count} "
                    f"of {len(values)} records; that pair is left out of their texts"
                )
        values = [names[key] if key in names else cols[key] for key in labels["keys"]]
        text, attributes = attribute_columns(self.name, list(labels["keys"].values()), values)
        return make_table(
            len(text),
            dataset=self.name,
            image=cols["image"],
            image_id=prefixed("fs2k/", strip_extension(cols["name"])),
            split=cols["split"],
            kind="attributes",
            text=text,
            attributes=attributes,
            source=cols["source"],
        )


def load_records(path: Path) -> list:
    try:
        records = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); expected an array of FS2K records"
        ) from None
    except RecursionError:
        raise UserError(NESTED_TOO_DEEPLY.format(path=path)) from None
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a JSON array of FS2K records, found a {type(records).__name__}")
    return records


def record_fields(record, labels: dict) -> dict:
    """The name, label codes (as strings), colours and skin point of one JSON record, and what is wrong with it."""
    fields = {
        "malformed": False,
        "detail": None,
        "missing": "",
        "name": None,
        "point": None,
        **dict.fromkeys(labels["codes"]),
        **dict.fromkeys(labels["colours"]),
    }
    name = record.get(NAME_KEY) if isinstance(record, dict) else None
    if not isinstance(name, str) or not name.strip():
        detail = f"expected an object with a string {NAME_KEY}, found {json.dumps(record)[:80]}"
        return {**fields, "malformed": True, "detail": detail}
    absent = [k for k in labels["codes"] if record.get(k) is None]
    fields.update({k: code_text(record[k]) for k in labels["codes"] if k not in absent})
    fields.update({k: record.get(k) for k in labels["colours"]})
    fields["point"] = next((record[k] for k in labels["skin_point"] if k in record), None)
    fields["missing"] = f"no value for {', '.join(absent)}" if absent else ""
    return {**fields, "name": name.strip()}


def code_text(value) -> str:
    """A label code as the manifest spells it: 1, 1.0 and "1" are all "1"; anything else stays visible."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else repr(value)


def number_rows(values: list, width: int) -> np.ndarray:
    """(n, width) floats; a value that is not `width` finite numbers (nan, [], a string) is a NaN row."""
    out = np.full((len(values), width), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, list) and len(v) == width and all(is_number(x) for x in v):
            out[i] = v
    return out


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def patch_mean(path: Path, point: np.ndarray, side: int) -> np.ndarray:
    """Mean RGB of the side x side square centred on the [x, y] point, clamped to the photo."""
    with Image.open(path) as image:
        width, height = image.size
        x, y = math.floor(point[0]), math.floor(point[1])
        if not (0 <= x < width and 0 <= y < height):
            raise PointOutside(
                f"skin point [{point[0]:g}, {point[1]:g}] outside the {width}x{height} photo {path.name}"
            )
        shrink = max([f for f in (1, 2, 4, 8) if min(width, height) // f >= DRAFT_MIN_SIDE] or [1])
        image.draft("RGB", (width // shrink, height // shrink))  # JPEG only: decode at 1/2, 1/4 or 1/8 size
        sx, sy = width / image.width, height / image.height
        half = side // 2
        left, top = max(0, x - half), max(0, y - half)
        right, bottom = min(width, x + side - half), min(height, y + side - half)
        box = (
            int(left / sx),
            int(top / sy),
            max(math.ceil(right / sx), int(left / sx) + 1),
            max(math.ceil(bottom / sy), int(top / sy) + 1),
        )
        return np.asarray(image.crop(box).convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


def photo_key(name: str) -> str:
    """`photo1/Image0110.JPG` and `photo1/image0110` both -> `photo1/image0110`."""
    stem, ext = os.path.splitext(name)
    return (stem if ext.lower() in IMAGE_EXTENSIONS else name).lower()


def strip_extension(names: pa.Array) -> pa.Array:
    return pa.array(
        [
            os.path.splitext(n)[0] if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS else n
            for n in names.to_pylist()
        ],
        pa.string(),
    )


def concat(parts: list):
    return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else pa.concat_arrays(parts)


CONVERTER = FS2K
