"""The export run every format shares: plan, read faces, hand them to the format's writer, resume, reconcile.

Plan: the corpus pairs (`corpus.layout`) are selected (`--split`, `--datasets`), given their text
(`export.text`) and grouped by split and face; the faces of a split, sorted by image_id, are cut into
units of about `pairs_per_unit` pairs (a face never straddles two units). Each unit is written by one
worker process (`--workers`): every face is read exactly as `tokenize-images` reads it
(`facetokens.images.prepare_face`: crop, square, resize) and encoded as JPEG, or checked and linked
(`--link`). A unit ends with its marker `DIR/.export/done/SPLIT-NNNNN.json` (its counts), written last,
so a killed run redoes only unfinished units. Then each split's files are assembled, and
`DIR/export-summary.json` says: pairs in = written + skipped, by reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from common.errors import UserError
from common.fileio import atomic_path, output_folder, write_json, write_jsonl
from common.locks import folder_lock
from common.records import SPLITS
from corpus import layout
from facetokens.images import BadImage, face_file_size, try_prepare_face

from . import load_format
from .config import ExportConfig
from .text import pair_text

log = logging.getLogger(__name__)

STATE = ".export"  # DIR/.export/: settings.json, parts/, done/ (hidden: no consumer reads it)
SUMMARY_FILE = "export-summary.json"
REJECTS_FILE = "export-rejects.jsonl"
JPEG_QUALITY = 95
EMPTY_TEXT = "empty text"
NO_IMAGE_ROW = "no row in images.parquet"
SPLIT_NOT_SELECTED = "split not selected"
DATASET_NOT_SELECTED = "dataset not selected"
SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class Face:
    """One face of a unit and the records of its selected pairs (one per exported pair)."""

    image_id: str
    path: str
    box: list | None
    name: str  # file name stem, safe on every file system (`safe_name`)
    records: list[dict] = field(default_factory=list)


@dataclass
class Unit:
    split: str
    index: int
    faces: list[Face]
    key_digits: int = 4  # digits of a sample's number in its unit (webdataset keys)

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}"

    @property
    def pairs(self) -> int:
        return sum(len(f.records) for f in self.faces)


@dataclass
class FaceImage:
    """A face ready to write: JPEG bytes (`data`), or the source file to link (`source`)."""

    data: bytes | None
    source: Path | None
    suffix: str
    width: int
    height: int


# ----------------------------------------------------------------------------- planning
def safe_name(image_id: str) -> str:
    """`celeba/000001` as is; an id with other characters is cleaned and tagged with its CRC32, so names stay unique."""
    segments = image_id.split("/")
    if all(SAFE_SEGMENT.fullmatch(s) for s in segments):
        return image_id
    cleaned = "/".join(re.sub(r"[^A-Za-z0-9._-]", "_", s).lstrip(".-") or "_" for s in segments)
    return f"{cleaned}-{zlib.crc32(image_id.encode()):08x}"


def read_pairs(corpus: Path, config: ExportConfig, skipped: Counter) -> tuple[dict[tuple, list[dict]], int]:
    """{(split, image_id): [record, ...]} of the selected pairs with a text; the rest counted in `skipped`."""
    columns = ["image_id", "dataset", "kind", "text", "split"] + (
        ["attributes"] if config.attribute_text == "sentence" else []
    )
    chosen, pairs_in = {}, 0
    for values in layout.read_pair_columns(corpus, columns):
        pairs_in += len(values[0])
        if len(values) == 5:
            values.append([None] * len(values[0]))
        for image_id, dataset, kind, text, split, attributes in zip(*values):
            if split not in config.splits:
                skipped[SPLIT_NOT_SELECTED] += 1
            elif config.datasets is not None and dataset not in config.datasets:
                skipped[DATASET_NOT_SELECTED] += 1
            elif not (exported := pair_text(kind, text, attributes, config.attribute_text)):
                skipped[EMPTY_TEXT] += 1
            else:
                chosen.setdefault((split, image_id), []).append(
                    pair_record(image_id, dataset, kind, text, split, exported)
                )
    return chosen, pairs_in


def pair_record(image_id: str, dataset: str, kind: str, text: str, split: str, exported: str) -> dict:
    """The fields every format writes for a pair: the text used, and the attribute text and caption apart."""
    attribute_text, caption = (text, "") if kind == "attributes" else ("", text)
    return {
        "text": exported,
        "image_id": image_id,
        "dataset": dataset,
        "kind": kind,
        "split": split,
        "attribute_text": attribute_text,
        "caption": caption,
    }


def caption_record(record: dict) -> dict:
    """A record for the formats whose `caption` is the text used (FeedFace, img2dataset): without text and caption."""
    return {k: v for k, v in record.items() if k not in ("text", "caption")}


def plan(corpus: Path, config: ExportConfig) -> tuple[list[Unit], Counter, int]:
    """The units to write, the pairs skipped before reading any image (by reason) and the pairs in the corpus."""
    skipped: Counter = Counter()
    chosen, pairs_in = read_pairs(corpus, config, skipped)
    images = layout.read_images(corpus, ["image_id", "path", "box"])
    rows = dict(
        zip(images.column("image_id").to_pylist(), zip(*(images.column(c).to_pylist() for c in ("path", "box"))))
    )
    units = []
    for split in SPLITS:
        faces = []
        for (_, image_id), records in sorted((k, v) for k, v in chosen.items() if k[0] == split):
            if image_id not in rows:
                skipped[NO_IMAGE_ROW] += len(records)
                continue
            path, box = rows[image_id]
            faces.append(Face(image_id, path, list(box) if box is not None else None, safe_name(image_id), records))
        units += cut_units(split, faces, config.pairs_per_unit)
    digits = max(4, len(str(max((u.pairs for u in units), default=1) - 1)))
    for unit in units:
        unit.key_digits = digits
    return units, skipped, pairs_in


def cut_units(split: str, faces: list[Face], pairs_per_unit: int) -> list[Unit]:
    """Consecutive faces in units of at least `pairs_per_unit` pairs (the last may hold fewer)."""
    units, current, pairs = [], [], 0
    for face in faces:
        current.append(face)
        pairs += len(face.records)
        if pairs >= pairs_per_unit:
            units.append(Unit(split, len(units), current))
            current, pairs = [], 0
    if current:
        units.append(Unit(split, len(units), current))
    return units


def plan_digest(units: list[Unit]) -> str:
    """What the output depends on besides the settings: every unit's faces, files and records."""
    h = hashlib.sha256()
    for unit in units:
        for face in unit.faces:
            h.update(
                json.dumps([unit.name, face.image_id, face.path, face.box, face.records], ensure_ascii=False).encode()
            )
    return h.hexdigest()


# ----------------------------------------------------------------------------- reading and placing faces
def read_face(face: Face, config: ExportConfig) -> tuple[FaceImage | None, BadImage | None]:
    """The face cropped and resized as tokenize-images does, as JPEG bytes; with --link its checked source file."""
    if config.link:
        try:
            width, height = face_file_size(face.path, face.box)
        except BadImage as e:
            return None, e
        return FaceImage(None, Path(face.path), Path(face.path).suffix.lower() or ".jpg", width, height), None
    array, reject = try_prepare_face(face.path, face.box, config.size)
    if reject is not None:
        return None, BadImage(reject.reason, reject.detail)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return FaceImage(buffer.getvalue(), None, ".jpg", config.size, config.size), None


def place_face(image: FaceImage, stem: Path) -> Path:
    """Write the face (or its link) at `stem` + its suffix, atomically; the file's path."""
    target = stem.with_name(stem.name + image.suffix)
    with atomic_path(target) as tmp:
        if image.source is not None:
            os.symlink(os.path.abspath(image.source), tmp)
        else:
            tmp.write_bytes(image.data)
    return target


class JsonlParts:
    """A unit writer for the formats that are face files + one JSONL per split: the unit's lines go to a part,
    which `assemble_parts` joins per split. `line(face_file, image, record)` makes one line."""

    def __init__(self, out: Path, unit: Unit, faces_folder: Path, line):
        self.out, self.unit, self.faces_folder, self.line = out, unit, faces_folder, line
        self.lines: list[dict] = []

    def add(self, face: Face, image: FaceImage) -> None:
        file = place_face(image, self.faces_folder / face.name)
        self.lines.extend(self.line(file, image, record) for record in face.records)

    def close(self) -> None:
        write_jsonl(self.lines, part_file(self.out, self.unit))


def part_file(out: Path, unit: Unit) -> Path:
    return out / STATE / "parts" / f"{unit.name}.jsonl"


def assemble_parts(out: Path, split: str, units: list[Unit], target: Path) -> None:
    """The split's parts, in unit order, as one JSONL file (byte for byte)."""
    with atomic_path(target) as tmp, open(tmp, "wb") as joined:
        joined.writelines(part_file(out, unit).read_bytes() for unit in units)


# ----------------------------------------------------------------------------- running
def marker_file(out: Path, unit: Unit) -> Path:
    return out / STATE / "done" / f"{unit.name}.json"


def write_unit(job: tuple[Unit, ExportConfig, Path]) -> dict:
    """Write one unit (in a worker process): its faces, its lines or shard, then its marker; its counts."""
    unit, config, out = job
    writer = load_format(config.format).unit_writer(out, unit, config)
    skipped, rejects, written, faces = Counter(), [], 0, 0
    for face in unit.faces:
        image, bad = read_face(face, config)
        if bad is not None:
            skipped[f"image {bad.reason}"] += len(face.records)
            rejects.append(
                {
                    "image_id": face.image_id,
                    "path": face.path,
                    "reason": bad.reason,
                    "detail": bad.detail,
                    "pairs": len(face.records),
                }
            )
            continue
        writer.add(face, image)
        written, faces = written + len(face.records), faces + 1
    writer.close()
    result = {
        "unit": unit.name,
        "split": unit.split,
        "pairs": unit.pairs,
        "written": written,
        "faces": faces,
        "skipped": dict(sorted(skipped.items())),
        "rejects": rejects,
    }
    write_json(result, marker_file(out, unit))
    return result


def export_corpus(corpus: Path, out: Path, config: ExportConfig) -> dict:
    """Export CORPUS into OUT in `config.format`; resumes a killed run with the same settings. The summary."""
    corpus, out = Path(corpus), output_folder(Path(out))
    if not layout.is_complete(corpus):
        lacking = f" (it lacks {', '.join(layout.missing_files(corpus))})" if corpus.is_dir() else ""
        raise UserError(f"--corpus {corpus}: not a corpus folder written by build-corpus{lacking}")
    fmt = load_format(config.format)
    if config.link and not fmt.LINKS:
        raise UserError(f"--link: {config.format} holds the image bytes; use imagefolder or feedface to link")
    with folder_lock(out, "export"):
        units, skipped, pairs_in = plan(corpus, config)
        check_settings(out, config, plan_digest(units))
        results = run_units(units, config, out)
        for split in config.splits:
            fmt.finish_split(out, split, [u for u in units if u.split == split])
        summary = summarise(config, pairs_in, skipped, results)
        write_jsonl((r for result in results for r in result["rejects"]), out / REJECTS_FILE)
        write_json(summary, out / SUMMARY_FILE)
    return summary


def check_settings(out: Path, config: ExportConfig, digest: str) -> None:
    """Record the settings and the plan; a folder holding another export's units is refused, not mixed."""
    settings = {"settings": config.recorded(), "plan": digest}
    path = out / STATE / "settings.json"
    if path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            recorded = None
        if recorded != settings:
            raise UserError(
                f"--out {out}: holds an export of another corpus or with other settings ({path}); "
                "choose another folder or delete it"
            )
    elif any(p.name not in (STATE, ".lock") for p in out.iterdir()):
        raise UserError(f"--out {out}: not empty and not an export folder; choose an empty or new folder")
    write_json(settings, path)


def run_units(units: list[Unit], config: ExportConfig, out: Path) -> list[dict]:
    """Every unit's counts in unit order: read from the markers of finished units, the others written now."""
    done = {
        u.name: json.loads(marker_file(out, u).read_text(encoding="utf-8"))
        for u in units
        if marker_file(out, u).is_file()
    }
    pending = [u for u in units if u.name not in done]
    log.info("%d units (%d finished before), %d workers", len(units), len(done), config.workers)
    jobs = [(unit, config, out) for unit in pending]
    with tqdm(
        total=sum(len(u.faces) for u in pending), unit="face", desc=f"export {config.format}", disable=None
    ) as bar:
        if config.workers == 1 or len(pending) <= 1:
            finished = map(write_unit, jobs)
            for result in finished:
                done[result["unit"]] = result
                bar.update(result["faces"] + len(result["rejects"]))
        else:
            with multiprocessing.get_context("fork").Pool(min(config.workers, len(pending))) as pool:
                for result in pool.imap_unordered(write_unit, jobs):
                    done[result["unit"]] = result
                    bar.update(result["faces"] + len(result["rejects"]))
    return [done[u.name] for u in units]


def summarise(config: ExportConfig, pairs_in: int, skipped: Counter, results: list[dict]) -> dict:
    """pairs in = written + skipped (by reason), per split and in all; raises if they do not reconcile."""
    for result in results:
        skipped.update(result["skipped"])
    written = sum(r["written"] for r in results)
    splits = {
        s: {
            "pairs": sum(r["written"] for r in results if r["split"] == s),
            "faces": sum(r["faces"] for r in results if r["split"] == s),
            "units": sum(r["split"] == s for r in results),
        }
        for s in config.splits
    }
    summary = {
        "format": config.format,
        "settings": config.recorded(),
        "pairs_in": pairs_in,
        "written": written,
        "skipped": dict(sorted(skipped.items())),
        "skipped_total": sum(skipped.values()),
        "faces_written": sum(r["faces"] for r in results),
        "splits": splits,
    }
    if pairs_in != written + summary["skipped_total"]:
        raise RuntimeError(
            f"export counts do not reconcile: {pairs_in} pairs in, {written} written, "
            f"{summary['skipped_total']} skipped"
        )
    return summary
