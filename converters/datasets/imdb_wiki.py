"""IMDB-WIKI: age and gender of celebrity face crops -> `imdb age: 34; gender: male` / `wiki age: ...`.

Reads `imdb_crop/imdb.mat` and `wiki_crop/wiki.mat` (either may be absent; the IMDb metadata may
also come as `imdb/imdb.mat` from imdb_meta.tar beside the `imdb_crop/` images). Each is a 1x1
struct of columns read by field name. The age follows the official rule (photo taken on 1 July).
Unfiltered by default, as the paper's 523k; `filtered=true` applies the usual filter, its drops
counted as rejects by reason. The `_crop` images are already cropped: no box. No official split:
hashed by person (IMDb celeb_id, WIKI name), else by image.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.arrays import normalise_text
from common.errors import UserError

from ..helpers.base import Converter
from ..helpers.matfiles import MatStruct, read_struct
from ..helpers.rows import attribute_columns, map_values, person_split_attributes, prefixed, stems

REQUIRED_FIELDS = ("dob", "photo_taken", "full_path", "gender", "face_score", "second_face_score")
UNIX_EPOCH_ORDINAL = 719163  # date(1970, 1, 1).toordinal(): numpy's datetime64 day 0
MAX_ORDINAL = 3652059  # date.max.toordinal(): beyond it Python's rule raises, so the dob is bad
BORN_LATE_MONTH = 7  # born in July or later: not yet had this year's birthday on 1 July


@dataclasses.dataclass
class Options:
    filtered: bool = False  # the usual filter: face found, one face, known gender, age within 0..100
    min_face_score: float | None = None  # with filtered: the face_score threshold (default: the manifest's 1.0)


class ImdbWiki(Converter):
    name = "imdb_wiki"
    Options = Options

    def convert(self):
        if self.options.filtered:
            rule = self.manifest["labels"]["usual_filter"]
            self.notes.append(
                f"usual filter applied: face_score >= {self.face_score_threshold()}, no second face, "
                f"age {rule['min_age']}..{rule['max_age']}, known gender"
            )
        for source, (mat, images) in self.locate_sources().items():
            yield self.convert_source(source, mat, images)

    def locate_sources(self) -> dict[str, tuple[Path, Path]]:
        sources = self.manifest["labels"]["sources"]
        found = {source: paths for source in sources if (paths := self.locate(source))}
        if not found:
            raise UserError(
                f"{self.name}: no {' or '.join(f'{s}.mat' for s in sources)} under {self.root} "
                f"(looked 3 levels deep); expected imdb_crop/imdb.mat and/or wiki_crop/wiki.mat"
            )
        self.notes += [f"{source}: {source}.mat not found, source skipped" for source in sources if source not in found]
        return found

    def locate(self, source: str) -> tuple[Path, Path] | None:
        """The source's .mat file and the folder its full_path entries are relative to."""
        crop = self.tree.find_dir(f"{source}_crop", required=False)
        mat = crop and self.tree.find_file(f"{source}.mat", under=crop, required=False)
        if mat:
            return mat, mat.parent  # the official tar: the .mat beside the 00..99 folders
        mat = self.tree.find_file(f"{source}.mat", required=False)
        if mat is None:
            return None
        if crop is None:
            return mat, mat.parent
        return mat, self.tree.unwrap(crop)  # metadata download beside the crops

    def convert_source(self, source: str, mat: Path, images: Path) -> pa.Table:
        cols = self.read_columns(mat, source)
        n = len(cols["full_path"])
        self.count_records(n)
        rel = self.tree.rel(mat)
        self.notes.append(f"{source}: {rel}, {n} entries, images under {self.tree.rel(images)}/")
        cols["source"] = pc.binary_join_element_wise(rel, pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), ":")
        cols = self.reject_where(
            cols,
            cols["full_path"].is_null().to_numpy(zero_copy_only=False),
            "malformed line",
            "full_path is not a 1-element string array",
        )
        cols = self.reject_repeats(cols, cols["full_path"])
        cols = self.genders(cols)
        cols["age"], cols["age_ok"] = official_age(
            cols["dob"], cols["photo_taken"], self.manifest["labels"]["plausible_age"]
        )
        cols = self.apply_filter(cols) if self.options.filtered else self.drop_empty(cols, source)

        prefix = "" if images == self.root else self.tree.rel(images) + "/"
        cols["image"] = prefixed(prefix, cols["full_path"])
        folders = [images] + self.tree.subfolders(images, hidden=True)
        cols = self.drop_missing_images(cols, folders)

        image_id = prefixed(f"{source}/", stems(cols["full_path"]))
        age = pa.array(cols["age"], mask=~cols["age_ok"]).cast(pa.string())
        text, attributes = attribute_columns(source, ["age", "gender"], [age, cols["gender"]])
        person = self.persons(source, cols)
        return person_split_attributes(self.name, cols["image"], image_id, text, attributes, cols["source"], person)

    def read_columns(self, mat: Path, source: str) -> dict:
        """The struct's fields by name: strings as pyarrow arrays, numbers as float64 vectors."""
        with read_struct(mat, source) as struct:
            for name in REQUIRED_FIELDS:
                struct.field(name)  # a UserError naming the file and the missing field
            cols = {"full_path": cell_strings(struct, "full_path")}
            cols.update({f: struct.numbers(f) for f in REQUIRED_FIELDS if f != "full_path"})
            if "celeb_id" in struct.field_names:  # the person: IMDb's celebrity id ...
                cols["celeb_id"] = struct.numbers("celeb_id")
            elif "name" in struct.field_names:  # ... else the name (WIKI)
                cols["name"] = cell_strings(struct, "name")
        n = len(cols["full_path"])
        for field, values in cols.items():
            if len(values) != n:
                raise UserError(
                    f"{mat}: field {source}.{field} has {len(values)} entries but full_path has {n}; "
                    f"expected one entry per image in every field"
                )
        return cols

    def genders(self, cols: dict) -> dict:
        """1 -> male, 0 -> female, NaN -> null (unknown); any other code is rejected."""
        gender = cols["gender"]
        codes = pa.array(gender, mask=np.isnan(gender)).cast(pa.string())
        cols["gender"] = map_values(codes, self.manifest["labels"]["gender"])
        unknown = codes.is_valid().to_numpy(zero_copy_only=False) & cols["gender"].is_null().to_numpy(
            zero_copy_only=False
        )
        return self.reject_where(
            cols, unknown, "unknown label value", pc.binary_join_element_wise("gender=", codes, "")
        )

    def drop_empty(self, cols: dict, source: str) -> dict:
        """Unfiltered: a record keeps whichever of age and gender it has; one with neither is rejected."""
        no_gender = cols["gender"].is_null().to_numpy(zero_copy_only=False)
        cols = self.reject_where(
            cols, no_gender & ~cols["age_ok"], "missing value", "no plausible age (dob, photo_taken) and no gender"
        )
        self.notes.append(
            f"{source}: rows without age (bad dob or implausible age): {int((~cols['age_ok']).sum())}, "
            f"without gender (NaN): {int(cols['gender'].null_count)}"
        )
        return cols

    def apply_filter(self, cols: dict) -> dict:
        """The usual filter; each dropped record is rejected with the first check it fails."""
        rule, threshold = self.manifest["labels"]["usual_filter"], self.face_score_threshold()
        checks = [
            ("no face", lambda c: np.isneginf(c["face_score"]), "face_score is -inf"),
            ("face score too low", lambda c: ~(c["face_score"] >= threshold), f"face_score < {threshold}"),
            ("second face", lambda c: ~np.isnan(c["second_face_score"]), "second_face_score is set"),
            (
                "age out of range",
                lambda c: ~(c["age_ok"] & (c["age"] >= rule["min_age"]) & (c["age"] <= rule["max_age"])),
                f"age outside {rule['min_age']}..{rule['max_age']} or bad dob",
            ),
            ("unknown gender", lambda c: c["gender"].is_null().to_numpy(zero_copy_only=False), "gender is NaN"),
        ]
        for reason, bad, detail in checks:
            cols = self.reject_where(cols, bad(cols), reason, detail)
        return cols

    def face_score_threshold(self) -> float:
        given = self.options.min_face_score
        return self.manifest["labels"]["usual_filter"]["min_face_score"] if given is None else given

    def persons(self, source: str, cols: dict) -> pa.Array:
        """IMDb: `imdb_wiki:imdb:<celeb_id>`; WIKI: `imdb_wiki:wiki:<name>` where the name is given."""
        if "celeb_id" in cols:
            ids = cols["celeb_id"]
            known = np.isfinite(ids) & (ids > 0)
            identity = pa.array(np.where(known, ids, 0).astype(np.int64), mask=~known).cast(pa.string())
        elif "name" in cols:
            identity = normalise_text(cols["name"])
            identity = pc.if_else(pc.equal(identity, ""), pa.scalar(None, pa.string()), identity)
        else:
            return pa.nulls(len(cols["source"]), pa.string())
        return prefixed(f"{self.name}:{source}:", identity)


def cell_strings(struct: MatStruct, name: str) -> pa.Array:
    """A cell array of 1-element strings; null where a cell is empty or not a single string.

    Fast path: one `item()` per cell (the whole column in ~0.1 s for IMDb); any odd cell
    (empty, several strings, a number) falls back to matfiles' checked decoder.
    """
    value, strings = struct.field(name), None
    if isinstance(value, np.ndarray) and value.dtype == object:
        try:
            strings = pa.array([cell.item() if len(cell) else None for cell in value.ravel(order="F")], pa.string())
        except (ValueError, TypeError, AttributeError, pa.ArrowException):
            pass
    strings = struct.strings(name) if strings is None else strings
    return pc.if_else(pc.equal(strings, ""), pa.scalar(None, pa.string()), strings)


def official_age(dob: np.ndarray, taken: np.ndarray, plausible: dict) -> tuple[np.ndarray, np.ndarray]:
    """Age on 1 July of photo_taken, as the official code computes it, and where it is plausible.

    birth = date.fromordinal(max(int(dob) - 366, 1)); age = photo_taken - birth.year, minus one
    if born in July or later. Vectorised with numpy's (proleptic Gregorian) datetime64.
    """
    ok = np.isfinite(dob) & np.isfinite(taken)
    ordinal = np.maximum(np.trunc(np.where(ok, dob, 367.0)) - 366, 1)
    ok &= ordinal <= MAX_ORDINAL
    days = (np.where(ok, ordinal, UNIX_EPOCH_ORDINAL) - UNIX_EPOCH_ORDINAL).astype("datetime64[D]")
    months = days.astype("datetime64[M]").astype(np.int64)
    year, month = months // 12 + 1970, months % 12 + 1
    age = np.where(ok, taken, 0).astype(np.int64) - year - (month >= BORN_LATE_MONTH)
    ok &= (age >= plausible["min"]) & (age <= plausible["max"])
    return age, ok


CONVERTER = ImdbWiki
