"""The one place that writes tokenized shards: layout, assignment, atomic writes, resume markers, index.

`SHARDS/` holds
  plan.json                what the shards were made from (corpus faces digest, model digest,
                           shard size, precision); a re-run with a different plan is refused
  SPLIT/shard-NNNNNN.tar   WebDataset samples, one per face of that split (see `sample`); one
                           folder per split (train/, val/, test/), so training never opens a test face
  SPLIT/shard-NNNNNN.stats.json  written last, after the tar is renamed into place: the resume marker
  index.json               faces per shard and every reject, once all shards are complete
  tokenize-config-node-R.json  the TokenizeConfig of machine R's last run

Shard k of a split holds faces [k * shard_size, (k + 1) * shard_size) of that split's faces sorted
by image_id. The work list is every split's shards in the order of SPLITS (`plan_units`); machines
take static blocks of it, so assignment depends on neither the number of GPUs nor the number of
machines. Tar members have mtime 0, fixed owner and mode, and samples are written in face order: a
shard's bytes depend only on its faces and the model.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.fileio import atomic_path, remove_temporaries, write_json
from common.records import SPLITS

CODES_MEMBER = "codes.u16"
JSON_MEMBER = "json"
PLAN_FILE = "plan.json"
INDEX_FILE = "index.json"
FORMAT_VERSION = 2  # 2: one folder of shards per split
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class Face:
    """One unique face to tokenize, with every text paired with it in the corpus."""

    image_id: str
    dataset: str
    path: str  # absolute file to read
    image: str  # path relative to the dataset root
    box: list[int] | None
    split: str
    texts: list[dict] = field(default_factory=list)  # {"dataset", "kind", "text", "attributes"}


def write_run_config(out: Path, node_rank: int, config: dict) -> None:
    write_json(config, Path(out) / f"tokenize-config-node-{node_rank}.json")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def split_dir(out: Path, split: str) -> Path:
    """SHARDS/SPLIT/: the shards of one split."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return Path(out) / split


def plan_units(faces_per_split: dict[str, int], shard_size: int) -> list[tuple[str, int]]:
    """The work list: (split, shard index) for every shard of every split, in the order of SPLITS."""
    return [(split, k) for split in SPLITS for k in range(shard_count(faces_per_split.get(split, 0), shard_size))]


def tar_path(out: Path, index: int) -> Path:
    return Path(out) / f"{shard_name(index)}.tar"


def stats_path(out: Path, index: int) -> Path:
    return Path(out) / f"{shard_name(index)}.stats.json"


def shard_count(n_faces: int, shard_size: int) -> int:
    return (n_faces + shard_size - 1) // shard_size


def shard_bounds(index: int, n_faces: int, shard_size: int) -> tuple[int, int]:
    return index * shard_size, min((index + 1) * shard_size, n_faces)


def node_shards(n_shards: int, num_nodes: int, node_rank: int) -> range:
    """The contiguous block of shards machine `node_rank` of `num_nodes` makes (static split)."""
    if num_nodes < 1 or not 0 <= node_rank < num_nodes:
        raise UserError(f"--node-rank must be in [0, {num_nodes}) and --num-nodes >= 1 (got {node_rank} of {num_nodes})")
    return range(n_shards * node_rank // num_nodes, n_shards * (node_rank + 1) // num_nodes)


def is_complete(out: Path, index: int) -> bool:
    """A shard is done when its stats file (written last) and its tar both exist."""
    return stats_path(out, index).is_file() and tar_path(out, index).is_file()


def sample_key(image_id: str) -> str:
    """A tar- and WebDataset-safe key for an image_id: bytes outside [A-Za-z0-9_-] become `~XX`.

    WebDataset splits a member name at its first dot and tar treats `/` as a folder, so neither
    may appear; the escape is reversible (`image_id_from_key`) and the JSON member has the id too.
    """
    return _UNSAFE.sub(lambda m: "".join(f"~{b:02x}" for b in m.group().encode("utf-8")), image_id)


def image_id_from_key(key: str) -> str:
    return re.sub(r"(?:~[0-9a-f]{2})+", lambda m: bytes.fromhex(m.group().replace("~", "")).decode("utf-8"), key)


def sample(face: Face, codes: np.ndarray) -> dict:
    """A WebDataset sample: `codes.u16` (raw little-endian uint16, raster order) and `json` (the face's texts)."""
    meta = {"image_id": face.image_id, "dataset": face.dataset, "split": face.split, "image": face.image,
            "box": face.box, "texts": face.texts}
    return {
        "__key__": sample_key(face.image_id),
        CODES_MEMBER: np.asarray(codes).astype("<u2").tobytes(),
        JSON_MEMBER: json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
    }


def write_shard(out: Path, index: int, samples: list[dict], rejects: list[dict], first: int, last: int) -> dict:
    """Write one shard (temporary name -> rename), then its stats file, the resume marker. Returns the stats."""
    from webdataset import TarWriter

    target = tar_path(out, index)
    with atomic_path(target) as tmp, open(tmp, "wb") as stream:
        writer = TarWriter(stream, user="talk2face", group="talk2face", mode=0o444, encoder=False, mtime=0)
        for item in samples:
            writer.write(item)
        writer.close()
    stats = {"shard": shard_name(index), "tar": target.name, "faces": len(samples), "face_range": [first, last],
             "bytes": target.stat().st_size, "rejects": rejects}
    write_json(stats, stats_path(out, index))
    return stats


def read_stats(out: Path, index: int) -> dict:
    return json.loads(stats_path(out, index).read_text(encoding="utf-8"))


def check_plan(out: Path, plan: dict) -> None:
    """Record the plan on the first run; refuse to resume shards made from a different one."""
    path = Path(out) / PLAN_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != plan:
            changed = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise UserError(f"{out} holds shards made with a different {', '.join(changed)}; use a new --out or remove it")
        return
    write_json(plan, path)


def remove_stale_temporaries(out: Path, units: list[tuple[str, int]]) -> None:
    """Delete temporary files a killed run of this machine's shards left behind (hold this machine's lock)."""
    remove_temporaries(*(path(split_dir(out, split), i) for split, i in units for path in (tar_path, stats_path)))


def write_index(out: Path, units: list[tuple[str, int]], plan: dict, corpus: Path | None = None) -> Path | None:
    """index.json over all shards, once every shard (of every machine) is complete; None before that."""
    if not all(is_complete(split_dir(out, s), i) for s, i in units):
        return None
    shards, rejects = [], []
    splits = {s: {"faces": 0, "shards": 0} for s in SPLITS}
    for split, i in units:
        stats = read_stats(split_dir(out, split), i)
        shards.append({"split": split, "tar": f"{split}/{stats['tar']}", "faces": stats["faces"],
                       "rejects": len(stats["rejects"])})
        splits[split]["faces"] += stats["faces"]
        splits[split]["shards"] += 1
        rejects.extend({**r, "split": split} for r in stats["rejects"])
    by_reason: dict[str, int] = {}
    for r in rejects:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    index = {"format": FORMAT_VERSION, "members": {"codes": CODES_MEMBER, "meta": JSON_MEMBER},
             "corpus": str(corpus) if corpus else None, "plan": plan,
             "faces": sum(s["faces"] for s in shards), "splits": splits, "shards": shards,
             "rejects": {"total": len(rejects), "by_reason": dict(sorted(by_reason.items())), "items": rejects}}
    write_json(index, Path(out) / INDEX_FILE)
    return Path(out) / INDEX_FILE


def tar_urls(out: Path, split: str | None = None) -> list[str]:
    """The shard files of a SHARDS/ folder, in order: one split's, or every split's (train, val, test).

    `out` may also be one split's folder itself (it holds the shard-*.tar files directly).
    """
    out = Path(out)
    if split is not None:
        folders = [split_dir(out, split)]
    elif any(out.glob("shard-*.tar")):
        folders = [out]
    else:
        folders = [out / s for s in SPLITS]
    return [str(p) for folder in folders for p in sorted(folder.glob("shard-*.tar")) if not p.name.startswith(".")]


def read_samples(out: Path, split: str | None = None):
    """Yield (meta, codes) for every face of a SHARDS/ folder (or of one split), in shard order."""
    for url in tar_urls(out, split):
        yield from read_samples_of(Path(url))


def read_samples_of(tar_file: Path, limit: int | None = None):
    """Yield (meta, int64 codes) from one shard, reading the tar directly (no WebDataset pipeline)."""
    for meta, codes in itertools.islice(read_raw_samples_of(tar_file), limit):
        yield decode_meta(meta), decode_codes(codes)


def read_raw_samples_of(tar_file: Path):
    """Yield the undecoded (json bytes, codes bytes) of every sample of one shard, in order: the one reader of shards.

    A reader that keeps only some faces decodes only those (`decode_meta`, `decode_codes`).
    """
    pending: dict[str, dict] = {}
    for name, data in _tar_members(tar_file):
        key, _, ext = name.partition(".")
        pending.setdefault(key, {})[ext] = data
        if CODES_MEMBER in pending[key] and JSON_MEMBER in pending[key]:
            item = pending.pop(key)
            yield item[JSON_MEMBER], item[CODES_MEMBER]


def decode_meta(data: bytes) -> dict:
    return json.loads(data)


def decode_codes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u2").astype(np.int64)


def _tar_members(tar_file: Path):
    """Yield (name, bytes) of every member of a tar file.

    Python's tarfile spends ~65 us on each header; the shard writer's plain ustar headers of regular files
    are read here directly. Any other header (pax, long name, bad checksum, end of data) hands the rest of
    the file, from that header on, to tarfile, so what is yielded (and raised) is what tarfile gives.
    """
    import tarfile

    data = Path(tar_file).read_bytes()  # a shard is a few MB; one read, then slices
    headers, stop = _plain_headers(data)
    for offset, size in headers:
        start = offset + 512
        if len(data) < start + size:
            raise tarfile.ReadError("unexpected end of data")
        yield data[offset:offset + 100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape"), data[start:start + size]
        if len(data) < start + size + -size % 512:  # members are padded to 512-byte blocks
            raise tarfile.ReadError("unexpected end of data")
    if data[stop:stop + 512] == bytes(512):  # the end-of-archive block
        return
    with open(tar_file, "rb") as f:
        f.seek(stop)
        with tarfile.open(tar_file) if stop == 0 else tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                yield member.name, tar.extractfile(member).read()


def _plain_headers(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """(offset, size) of the leading plain ustar headers of regular files (short name, valid checksum) in `data`,
    and the offset of the first block that is not one."""
    found, checksums, offset = [], [], 0
    while (fields := _plain_header_fields(data[offset:offset + 512])) is not None:
        found.append((offset, fields[0]))
        checksums.append(fields[1])
        offset += 512 + fields[0] + -fields[0] % 512
    if not found:
        return found, offset
    # the checksums of all headers at once: Python's sum() of a 512-byte header alone costs ~2.5 us
    blocks = np.frombuffer(data, dtype=np.uint8, count=len(data) // 512 * 512).reshape(-1, 512)
    headers = blocks[[o // 512 for o, _ in found]]
    sums = headers.sum(axis=1, dtype=np.int64) - headers[:, 148:156].sum(axis=1, dtype=np.int64) + 256
    bad = np.flatnonzero(sums != np.array(checksums, dtype=np.int64))
    return (found[:bad[0]], found[bad[0]][0]) if len(bad) else (found, offset)


def _plain_header_fields(header: bytes) -> tuple[int, int] | None:
    """(size, checksum field) of a regular file's plain ustar header (short name); None for any other block."""
    if len(header) != 512 or header[257:262] != b"ustar" or header[156:157] not in (b"0", b"\0") or header[345] != 0:
        return None
    try:
        return int(header[124:136].rstrip(b"\0 ") or b"x", 8), int(header[148:156].rstrip(b"\0 ") or b"x", 8)
    except ValueError:
        return None
