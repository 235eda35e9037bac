"""webdataset: tar shards per split, samples as img2dataset writes them (`KEY.jpg`, `KEY.txt`, `KEY.json`).

    DIR/train/00000.tar, 00001.tar, ...   (DIR/validation/, DIR/test/)

One sample per pair; KEY is the shard number (5 digits) then the sample's number in its shard (4 digits, more
when a shard holds more samples), as img2dataset's keys. `KEY.txt` is the pair's text, `KEY.json` holds key,
caption, status, width, height and image_id, dataset, kind, split, attribute_text. Members have mtime 0,
owner 0 and mode 0444, so a rerun writes the same bytes. Read them with plain
`webdataset.WebDataset(urls).decode("pil")` (open_clip and the webdataset trainers do).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from common.fileio import temporary_name
from common.records import HUB_SPLIT_NAMES

from .core import Face, FaceImage, Unit, caption_record

LINKS = False


def shard_file(out: Path, split: str, index: int) -> Path:
    return out / HUB_SPLIT_NAMES[split] / f"{index:05d}.tar"


class ShardWriter:
    """One unit's shard, written under a temporary name and renamed when closed."""

    def __init__(self, out: Path, unit: Unit):
        self.path = shard_file(out, unit.split, unit.index)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temporary_name(self.path, os.getpid())
        self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 - closed by close()
        self.unit, self.count = unit, 0

    def add(self, face: Face, image: FaceImage) -> None:
        for record in face.records:
            key = f"{self.unit.index:05d}{self.count:0{self.unit.key_digits}d}"
            meta = {
                "key": key,
                "caption": record["text"],
                "status": "success",
                "width": image.width,
                "height": image.height,
                **caption_record(record),
            }
            self._member(f"{key}.jpg", image.data)
            self._member(f"{key}.txt", record["text"].encode("utf-8"))
            self._member(f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
            self.count += 1

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o444, 0, 0, "", ""
        self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()
        os.replace(self.tmp, self.path)


def unit_writer(out: Path, unit: Unit, config) -> ShardWriter:
    return ShardWriter(out, unit)


def finish_split(out: Path, split: str, units: list[Unit]) -> None:
    """Nothing to join: each shard is final when its unit is done."""
