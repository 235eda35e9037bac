"""CelebA-Dialog: template captions and 0-5 fine-grained labels of CelebA faces -> caption and attribute rows.

The released file names are unconfirmed, so the .json/.txt files up to three levels under the root are
recognised by content (a known name wins when several match): the caption JSON is an object whose
values hold `overall_caption` (keys `000001.jpg` = standard version, `0.jpg` = HQ); the label table's
header is `img_name Bangs Eyeglasses No_Beard Smiling Young` (a count line before it is tolerated);
the CelebA-HQ mapping's header is `idx orig_idx orig_file`.

Rows: one `caption` per overall caption (attribute_captions=true adds each non-empty attribute-wise
caption as another pair); one `attributes` row per label line, degrees written as the manifest's words.
Split: CelebA's list_eval_partition (through the mapping for HQ), else a hash split by CelebA face.
Standard images are CelebA's img_align_celeba; images=PATH may lie outside the root, and `image` then
starts with `../` (still relative to the root).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.arrays import normalise_text
from common.errors import UserError
from common.splits import hash_split

from ..helpers.base import Converter
from ..helpers.celeba_family import HEADER as MAPPING_HEADER
from ..helpers.celeba_family import MAPPING_FILE, PARTITION_FILES, origin_ids, read_mapping, read_partition
from ..helpers.root import HEAD_BYTES, SEARCH_DEPTH
from ..helpers.rows import attribute_columns, key_name, make_table, prefixed, stems
from ..helpers.tables import Columns, read_json, read_table, read_text

CAPTION_FILES = {"standard": "captions.json", "hq": "captions_hq.json"}
LABEL_FILE = "combined_annotation.txt"
IMAGE_DIRS = {"standard": ("img_align_celeba",), "hq": ("image", "images", "CelebA-HQ-img", "CelebAimg")}
ID_PREFIX = {"standard": "celeba/", "hq": "celeba_hq/"}
FIRST_KEY = re.compile(r'"(\d+)\.\w+"\s*:')
CAPTION_FILE_HELP = "a JSON object keyed by image file name whose values hold overall_caption"
MISSING = object()


@dataclasses.dataclass
class Options:
    version: Literal["standard", "hq"] = "standard"
    captions: Path | None = None  # the caption JSON (default: recognised by content under the root)
    labels: Path | None = None  # the fine-grained label table (default: recognised by content; optional)
    images: Path | None = None  # image folder (default: img_align_celeba, or image/ for HQ, under the root)
    partition: Path | None = None  # CelebA's list_eval_partition.txt (default: found under the root)
    mapping: Path | None = None  # CelebA-HQ-to-CelebA-mapping.txt, HQ only (default: found under the root)
    attribute_captions: bool = False  # also make each non-empty attribute-wise caption a caption pair


@dataclasses.dataclass
class CaptionEntries:
    names: pa.Array  # the JSON keys (image file names)
    overall: pa.Array  # overall captions, null where absent or not a string
    wellformed: np.ndarray  # the entry is an object whose overall caption is a string or null
    wise: dict[str, pa.Array]  # attribute -> attribute-wise captions (null where absent or not a string)


class CelebADialog(Converter):
    name = "celeba_dialog"
    Options = Options

    def convert(self):
        labels = self.manifest["labels"]
        self.attributes, self.version = labels["attributes"], self.options.version
        found = self.survey(labels["image_column"])
        captions = self.given("captions") or self.pick_captions(found)
        label_file = (
            self.given("labels") or self.pick(found, "labels", LABEL_FILE) or named(found, LABEL_FILE)
        )  # found by name only if its header is wrong: an error then
        self.find_images()
        self.mapping = self.read_mapping(found) if self.version == "hq" else None
        self.partition = self.read_partition(found, labels["partition"])
        self.notes.append(
            f"files: captions {self.tree.shown(captions)}, images {self.tree.shown(self.image_dir)}, labels "
            + (self.tree.shown(label_file) if label_file else "none found (no attributes rows)")
        )
        yield self.caption_rows(captions, labels["caption_keys"])
        if label_file is not None:
            yield self.label_rows(label_file, labels)

    # -- finding the files ----------------------------------------------------------------
    def survey(self, image_column: str) -> dict[str, list[tuple[Path, str | None]]]:
        """The files under the root by kind (by name or content), each with the version its image names suggest."""
        found = {"all": self.candidate_files(), "captions": [], "labels": [], "mapping": [], "partition": []}
        label_header = {image_column, *self.attributes}
        for path in found["all"]:
            if path.name.lower() in PARTITION_FILES:
                found["partition"].append((path, None))
                continue
            head = self.tree.head(path)
            if path.suffix.lower() == ".json":
                if head.lstrip().startswith("{") and '"overall_caption"' in head:
                    key = FIRST_KEY.search(head)
                    found["captions"].append((path, version_of(key.group(1) if key else None)))
                continue
            lines = [line.split() for line in head.splitlines() if line.strip()][:3]
            at = 1 if lines and len(lines[0]) == 1 and lines[0][0].isdigit() else 0  # an image count line first
            if lines and lines[0][:3] == MAPPING_HEADER:
                found["mapping"].append((path, None))
            elif len(lines) > at and label_header <= set(lines[at]):
                first = lines[at + 1][0] if len(lines) > at + 1 else ""
                found["labels"].append((path, version_of(re.match(r"\d*", first).group())))
        return found

    def pick(self, found: dict, kind: str, known_name: str) -> Path | None:
        """This version's file of a kind: one with the known name first, else the shallowest."""
        fits = [p for p, v in found[kind] if v in (self.version, None)]
        fits.sort(key=lambda p: p.name.lower() != known_name.lower())  # stable: shallowest first otherwise
        if len(fits) > 1:
            self.notes.append(
                f"several {kind} files: used {self.tree.shown(fits[0])}, ignored "
                + ", ".join(self.tree.shown(p) for p in fits[1:])
            )
        return fits[0] if fits else None

    def pick_captions(self, found: dict) -> Path:
        path = self.pick(found, "captions", CAPTION_FILES[self.version])
        other = [p for p, v in found["captions"] if v != self.version]
        wrong = named(found, CAPTION_FILES[self.version])
        if path is None and other:
            switch = "hq" if self.version == "standard" else "standard"
            raise UserError(
                f"{other[0]}: holds the other version's captions, not {self.version}; pass version={switch}"
            )
        if path is None and wrong:
            raise UserError(f"{wrong}: not a caption file; expected {CAPTION_FILE_HELP}")
        if path is None:
            raise UserError(
                f"{self.name}: no caption file ({CAPTION_FILE_HELP}, e.g. {CAPTION_FILES[self.version]}) "
                f"under {self.root} (looked {SEARCH_DEPTH} levels deep); or pass captions=PATH"
            )
        return path

    def candidate_files(self) -> list[Path]:
        """The .json/.txt/.csv files within SEARCH_DEPTH levels, shallowest first, in name order.

        Listings are filtered in C++: an image folder holds 200k names.
        """
        files = []
        for level in self.tree.levels():
            for folder in level:
                names = pa.array(sorted(self.tree.files(folder)), pa.string())
                names = names.filter(pc.invert(pc.starts_with(names, ".")))
                scanned = names.filter(pc.match_substring_regex(names, SCANNED)).to_pylist()
                if len(scanned) <= MAX_FILES_PER_FOLDER:
                    files += [folder / n for n in scanned]
        return files

    def given(self, option: str, folder: bool = False) -> Path | None:
        return self.tree.given(getattr(self.options, option), option, folder)

    def find_images(self) -> None:
        folder = self.given("images", folder=True) or self.tree.find_dir(*IMAGE_DIRS[self.version], required=False)
        if folder is None:
            raise UserError(
                f"{self.name}: no image folder named {' or '.join(IMAGE_DIRS[self.version])} under "
                f"{self.root}; pass images=PATH (CelebA's img_align_celeba for the standard version)"
            )
        self.image_dir = folder = self.tree.unwrap(folder)  # re-zipped: img_align_celeba/img_align_celeba/
        self.image_names = pa.array(list(self.tree.files(folder)), pa.string())  # one listing, never opening
        self.image_prefix = "" if folder == self.root else Path(os.path.relpath(folder, self.root)).as_posix() + "/"
        if self.image_prefix.startswith("../"):
            self.notes.append(f"images are outside the root: image paths start with {self.image_prefix}")

    # -- splits ---------------------------------------------------------------------------
    def read_mapping(self, found: dict) -> dict | None:
        path = (
            self.given("mapping") or self.pick(found, "mapping", MAPPING_FILE) or named(found, MAPPING_FILE)
        )  # found by name only if its header is wrong: an error then
        self.notes.append(
            f"CelebA origins from {self.tree.shown(path)}"
            if path
            else f"no {MAPPING_FILE} (pass mapping=PATH): origin_id is empty"
        )
        return read_mapping(path) if path else None

    def read_partition(self, found: dict, codes: dict) -> dict | None:
        path = self.given("partition") or self.pick(found, "partition", PARTITION_FILES[0])
        if path is None or (self.version == "hq" and self.mapping is None):
            self.notes.append(
                "split: hash split by CelebA face (common.splits.hash_split), not CelebA's own: "
                + (
                    "no list_eval_partition found (pass partition=PATH)"
                    if path is None
                    else "HQ faces need the CelebA-HQ mapping to use it"
                )
            )
            return None
        names, splits = read_partition(path, self.tree.shown(path), codes)
        if not len(names):
            raise UserError(f"{path}: no partition lines; expected lines like '000001.jpg 0'")
        self.notes.append(f"split: CelebA's partition from {self.tree.shown(path)}")
        return {"ids": prefixed("celeba/", stems(names)), "split": splits}

    # -- rows -----------------------------------------------------------------------------
    def caption_rows(self, path: Path, keys: dict) -> pa.Table:
        rel = self.tree.shown(path)
        caps = read_captions(path, keys, self.attributes)
        self.count_records(len(caps.names))
        cols = {
            "source": pc.binary_join_element_wise(rel, caps.names, ":"),
            "name": caps.names,
            "text": normalise_text(caps.overall),
        }
        cols = self.reject_where(
            cols, ~caps.wellformed, "malformed entry", f"expected an object whose {keys['overall']} is a string"
        )
        cols = self.reject_where(cols, blank(cols["text"]), "empty caption")
        self.report_captionless(caps)
        if self.options.attribute_captions:
            extra = self.attribute_captions(rel, caps)
            self.count_records(len(extra["name"]))
            cols = {k: pa.concat_arrays([cols[k], extra[k]]) for k in cols}
        cols = self.checked(cols)
        return self.table(cols, "caption", cols["text"])

    def attribute_captions(self, rel: str, caps: CaptionEntries) -> dict:
        parts = []
        for attribute in self.attributes:
            texts = normalise_text(caps.wise[attribute])
            keep = pa.array(~blank(texts) & caps.wellformed)
            names = caps.names.filter(keep)
            parts.append(
                {
                    "source": pc.binary_join_element_wise(rel, names, attribute, ":"),
                    "name": names,
                    "text": texts.filter(keep),
                }
            )
        return {k: pa.concat_arrays([p[k] for p in parts]) for k in ("source", "name", "text")}

    def report_captionless(self, caps: CaptionEntries) -> None:
        empty = sum(int((blank(caps.wise[a]) & caps.wellformed).sum()) for a in self.attributes)
        if empty:
            self.notes.append(
                f"{empty} of {int(caps.wellformed.sum()) * len(self.attributes)} attribute-wise captions "
                "are empty or null (skipped, not pairs)"
            )
        on_disk = self.image_names.filter(pc.match_substring_regex(self.image_names, r"(?i)\.(jpe?g|png)$"))
        uncaptioned = sorted(on_disk.filter(pc.invert(pc.is_in(on_disk, value_set=caps.names))).to_pylist())
        if uncaptioned:
            self.notes.append(
                f"images in {self.tree.shown(self.image_dir)} without a caption entry: {len(uncaptioned)} ("
                + ", ".join(uncaptioned[:5])
                + (", ...)" if len(uncaptioned) > 5 else ")")
            )

    def label_rows(self, path: Path, labels: dict) -> pa.Table:
        table = self.read_labels(path, labels["image_column"])
        self.count_records(table.records)
        cols = {
            "source": table.sources(),
            "name": table[labels["image_column"]],
            **{a: table[a] for a in self.attributes},
        }
        cols = self.reject_repeats(cols, cols["name"])
        for attribute in self.attributes:  # each attribute has its own degree words
            cols = self.map_labels(cols, [attribute], labels["degrees"][attribute])
        cols = self.checked(cols)
        text, attributes = attribute_columns(
            self.name, [key_name(a) for a in self.attributes], [cols[a] for a in self.attributes]
        )
        return self.table(cols, "attributes", text, attributes)

    def read_labels(self, path: Path, image_column: str) -> Columns:
        expected = [image_column, *self.attributes]
        numbered = [(i, line) for i, line in enumerate(read_text(path)[:HEAD_BYTES].splitlines(), 1) if line.strip()]
        at = 1 if numbered and numbered[0][1].strip().isdigit() else 0  # optional image count line
        number, header = numbered[at] if len(numbered) > at else (1, "")
        if not set(expected) <= set(header.split()):
            raise UserError(
                f"{path}:{number}: expected the label header '{' '.join(expected)}', found {header.strip()!r}"
            )
        return read_table(path, self.tree.shown(path), header.split(), self.reject, skip_lines=number)

    def checked(self, cols: dict) -> dict:
        """Reject unsafe names, images not on disk and faces without a split; add image, ids and split."""
        cols = self.reject_unsafe(cols, "name")
        cols["image"] = prefixed(self.image_prefix, cols["name"])
        on_disk = pc.is_in(cols["name"], value_set=self.image_names).to_numpy(zero_copy_only=False)
        cols = self.reject_where(cols, ~on_disk, "image missing", cols["image"])
        stem = stems(cols["name"])
        cols["image_id"] = prefixed(ID_PREFIX[self.version], stem)
        if self.mapping is not None:
            cols["origin_id"] = origin_ids(stem, self.mapping)
        celeba_face = pc.coalesce(cols["origin_id"], cols["image_id"]) if "origin_id" in cols else cols["image_id"]
        if self.partition is None:
            cols["split"] = hash_split(celeba_face)
        else:
            cols["split"] = self.partition["split"].take(pc.index_in(celeba_face, value_set=self.partition["ids"]))
        return self.reject_where(
            cols,
            cols["split"].is_null().to_numpy(zero_copy_only=False),
            "no split",
            "CelebA face absent from list_eval_partition (or from the CelebA-HQ mapping)",
        )

    def table(self, cols: dict, kind: str, text: pa.Array, attributes: pa.Array | None = None) -> pa.Table:
        return make_table(
            len(cols["name"]),
            dataset=self.name,
            image=cols["image"],
            image_id=cols["image_id"],
            split=cols["split"],
            kind=kind,
            text=text,
            attributes=attributes,
            source=cols["source"],
            origin_id=cols.get("origin_id"),
        )

    def summary(self, table: pa.Table) -> dict:
        summary = super().summary(table)
        if self.version == "hq":
            summary["expected"]["official"] = self.manifest["counts"]["official_hq"]
        return summary


def named(found: dict, name: str) -> Path | None:
    return next((p for p in found["all"] if p.name.lower() == name.lower()), None)


def version_of(digits: str | None) -> str | None:
    """CelebA names are six digits (`000001`); CelebA-HQ indices have at most five (`0` ... `29999`)."""
    return None if not digits else "standard" if len(digits) == 6 else "hq"


def read_captions(path: Path, keys: dict, attributes: list[str]) -> CaptionEntries:
    """One pass over the caption JSON: names, overall captions, and the attribute-wise captions."""
    collecting = gc.isenabled()
    gc.disable()  # 1.2M fresh dicts would trigger repeated full collections that find nothing to free
    try:
        return caption_columns(read_json(path), path, keys, attributes)
    finally:
        if collecting:
            gc.enable()


def caption_columns(data, path: Path, keys: dict, attributes: list[str]) -> CaptionEntries:
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected {CAPTION_FILE_HELP}, found a JSON {type(data).__name__}")
    entries = [e if type(e) is dict else {} for e in data.values()]
    overall = [e.get(keys["overall"], MISSING) for e in entries]
    wise = [w if type(w := e.get(keys["attribute_wise"])) is dict else {} for e in entries]
    return CaptionEntries(
        names=pa.array(list(data), pa.string()),
        overall=pa.array([o if type(o) is str else None for o in overall], pa.string()),
        wellformed=np.array([o is None or type(o) is str for o in overall], dtype=bool),
        wise={a: pa.array([v if type(v := w.get(a)) is str else None for w in wise], pa.string()) for a in attributes},
    )


SCANNED = r"(?i)\.(json|txt|csv)$"
MAX_FILES_PER_FOLDER = 100  # a folder with more (one text file per image) holds no index files


def blank(values: pa.Array) -> np.ndarray:
    """True where a text is null or only whitespace."""
    return pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), True).to_numpy(zero_copy_only=False)


CONVERTER = CelebADialog
