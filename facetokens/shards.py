"""The one place that writes tokenized shards: layout, assignment, atomic writes, resume markers, index.

`SHARDS/` holds
  plan.json                what the shards were made from (corpus faces digest, model digest,
                           shard size, precision); a re-run with a different plan is refused
  SPLIT/shard-NNNNNN.tar   WebDataset samples, one per face of that split (see `sample`); one
                           folder per split (train/, val/, test/), so training never opens a test face
  SPLIT/shard-NNNNNN.stats.json  written last, after the tar is renamed into place: the resume marker, and
                           what a reader checks the tar against (faces, bytes, codes per face)
  index.json               faces per shard, every reject and the VQGAN geometry, once all shards are complete
  tokenize-config-node-R.json  the TokenizeConfig of machine R's last run

Shard k of a split holds faces [k * shard_size, (k + 1) * shard_size) of that split's faces sorted
by image_id. The work list is every split's shards in the order of SPLITS (`plan_units`); machines
take static blocks of it, so assignment depends on neither the number of GPUs nor the number of
machines. Tar members have mtime 0, fixed owner and mode, and samples are written in face order: a
shard's bytes depend only on its faces and the model.

Readers: `read_plan`, `read_index`, `read_stats`, `geometry` and `check_complete` are the only code that
parses plan.json, index.json and the stats files; `read_raw_samples_of` is the only reader of a tar, and it
refuses a shard that differs from what its writer recorded (`DamagedShard`).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserError, first_line
from common.fileio import atomic_path, read_json_object, remove_temporaries, write_json
from common.records import SPLITS

CODES_MEMBER = "codes.u16"
JSON_MEMBER = "json"
PLAN_FILE = "plan.json"
INDEX_FILE = "index.json"
FORMAT_VERSION = 2  # 2: one folder of shards per split
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
log = logging.getLogger(__name__)


class DamagedShard(UserError):
    """A shard that differs from what its writer recorded (size, face count, codes per face) or cannot be parsed."""

    def __init__(self, tar_file: Path, problem: str):
        super().__init__(
            f"{tar_file}: damaged shard: {problem}; re-run tokenize-images for it, or pass --skip-bad-shards"
        )
        self.tar_file = Path(tar_file)


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
        raise UserError(
            f"--node-rank must be in [0, {num_nodes}) and --num-nodes >= 1 (got {node_rank} of {num_nodes})"
        )
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
    meta = {
        "image_id": face.image_id,
        "dataset": face.dataset,
        "split": face.split,
        "image": face.image,
        "box": face.box,
        "texts": face.texts,
    }
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
    stats = {
        "shard": shard_name(index),
        "tar": target.name,
        "faces": len(samples),
        "face_range": [first, last],
        "bytes": target.stat().st_size,
        "codes_per_face": _codes_per_face(samples),
        "rejects": rejects,
    }
    write_json(stats, stats_path(out, index))
    return stats


def _codes_per_face(samples: list[dict]) -> int | None:
    sizes = {len(item[CODES_MEMBER]) // 2 for item in samples}
    if len(sizes) > 1:
        raise ValueError(f"samples of one shard with different code counts: {sorted(sizes)}")
    return sizes.pop() if sizes else None


def read_stats(out: Path, index: int) -> dict:
    return read_json_file(stats_path(out, index), "shard stats")


def read_json_file(path: Path, what: str) -> dict:
    """A JSON object the writer of the shards wrote; a half-written or damaged one is one line naming the file."""
    return read_json_object(path, what, hint="; half-written? re-run tokenize-images")


def read_plan(out: Path) -> dict | None:
    """SHARDS/plan.json (SHARDS/SPLIT/ given: the one a level up), or None where there is none."""
    path = _shards_root(out) / PLAN_FILE
    return read_json_file(path, "shard plan") if path.is_file() else None


def read_index(out: Path) -> dict | None:
    """SHARDS/index.json (SHARDS/SPLIT/ given: the one a level up), or None where there is none."""
    path = _shards_root(out) / INDEX_FILE
    return read_json_file(path, "shard index") if path.is_file() else None


def _shards_root(out: Path) -> Path:
    """SHARDS/ for SHARDS/ or for one split's folder SHARDS/SPLIT/ (it holds shard files, not split folders)."""
    out = Path(out)
    return out.parent if out.name in SPLITS and any(out.glob("shard-*.tar")) else out


def vqgan_geometry(vqgan_config: dict) -> dict:
    """What the shards' VQGAN makes of a face: image size, downsampling factor, code grid, codes and codebook size."""
    dd = vqgan_config.get("ddconfig") or {}
    size, levels = dd.get("resolution"), len(dd.get("ch_mult") or [])
    factor = 2 ** (levels - 1) if levels else None
    grid = size // factor if size and factor else None
    return {
        "image_size": size,
        "downsampling": factor,
        "grid": [grid, grid] if grid else None,
        "codes_per_face": grid * grid if grid else None,
        "codebook_size": vqgan_config.get("n_embed"),
    }


def geometry(out: Path) -> dict | None:
    """The geometry the shards were made with: from index.json, else from plan.json's VQGAN; None without either."""
    index = read_index(out)
    if index and index.get("geometry"):
        return index["geometry"]
    plan = read_plan(out) or (index or {}).get("plan")
    vqgan = ((plan or {}).get("vqgan") or {}).get("config")
    return vqgan_geometry(vqgan) if vqgan else None


def check_plan(out: Path, plan: dict) -> None:
    """Record the plan on the first run; refuse to resume shards made from a different one."""
    path = Path(out) / PLAN_FILE
    if path.is_file():
        old = read_plan(out)
        if old != plan:
            changed = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise UserError(
                f"{out} holds shards made with a different {', '.join(changed)}; use a new --out or remove it"
            )
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
        shards.append(
            {
                "split": split,
                "tar": f"{split}/{stats['tar']}",
                "faces": stats["faces"],
                "rejects": len(stats["rejects"]),
            }
        )
        splits[split]["faces"] += stats["faces"]
        splits[split]["shards"] += 1
        rejects.extend({**r, "split": split} for r in stats["rejects"])
    by_reason: dict[str, int] = {}
    for r in rejects:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    index = {
        "format": FORMAT_VERSION,
        "members": {"codes": CODES_MEMBER, "meta": JSON_MEMBER},
        "corpus": str(corpus) if corpus else None,
        "plan": plan,
        "geometry": vqgan_geometry(((plan.get("vqgan") or {}).get("config")) or {}),
        "faces": sum(s["faces"] for s in shards),
        "splits": splits,
        "shards": shards,
        "rejects": {"total": len(rejects), "by_reason": dict(sorted(by_reason.items())), "items": rejects},
    }
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


def check_complete(out: Path, split: str) -> list[str]:
    """The shard files of one split after checking none is missing: where index.json exists, every shard it lists for
    that split is present. (Each shard is checked against its own stats file as it is read: `read_raw_samples_of`.)"""
    urls = tar_urls(out, split)
    index = read_index(out)
    if index is not None and isinstance(index.get("shards"), list):
        listed = {Path(out) / s["tar"] for s in index["shards"] if s.get("split") == split}
        missing = sorted(str(p) for p in listed - {Path(u) for u in urls})
        if missing:
            raise UserError(
                f"{missing[0]}: listed in {Path(out) / INDEX_FILE} but missing ({len(missing)} missing in all)"
            )
    return urls


def read_samples(out: Path, split: str | None = None, skip_bad: bool = False, skipped: list | None = None):
    """Yield (meta, codes) for every face of a SHARDS/ folder (or of one split), in shard order.

    Each shard is read and checked whole before its faces are yielded; a damaged one raises `DamagedShard`,
    or with `skip_bad` is left out, logged and appended (its message) to `skipped`.
    """
    for url in tar_urls(out, split):
        try:
            faces = list(read_samples_of(Path(url)))
        except DamagedShard as e:
            if not skip_bad:
                raise
            log.warning("skipped %s", e.tar_file)
            if skipped is not None:
                skipped.append(str(e))
            continue
        yield from faces


def read_samples_of(tar_file: Path, limit: int | None = None):
    """Yield (meta, int64 codes) from one shard, reading the tar directly (no WebDataset pipeline)."""
    for meta, codes in itertools.islice(read_raw_samples_of(tar_file), limit):
        yield decode_meta(meta, tar_file), decode_codes(codes)


def shard_record(tar_file: Path) -> dict:
    """What the writer recorded about one shard (its stats file); a missing or unreadable one is a damaged shard."""
    path = Path(tar_file).with_suffix(".stats.json")
    if not path.is_file():
        raise DamagedShard(tar_file, "no stats file beside it (its writer did not finish)")
    try:
        stats = read_json_object(path, "shard stats")
    except UserError as e:
        raise DamagedShard(tar_file, str(e).split(": ", 1)[-1]) from None
    if not isinstance(stats.get("faces"), int) or not isinstance(stats.get("bytes"), int):
        raise DamagedShard(tar_file, f"{path.name} lacks its face count or size")
    return stats


def read_raw_samples_of(tar_file: Path):
    """Yield the undecoded (json bytes, codes bytes) of every sample of one shard, in order: the one reader of shards.

    The tar is checked against its stats file: its size before anything is yielded, each face's code count as it
    goes, the face count at the end; any difference or unparsable member raises `DamagedShard`.
    A reader that keeps only some faces decodes only those (`decode_meta`, `decode_codes`).
    """
    import tarfile

    stats = shard_record(tar_file)
    data = Path(tar_file).read_bytes()  # a shard is a few MB; one read, then slices
    if len(data) != stats["bytes"]:
        raise DamagedShard(
            tar_file, f"{len(data):,} bytes where its writer recorded {stats['bytes']:,} (truncated or changed)"
        )
    code_bytes = 2 * stats["codes_per_face"] if stats.get("codes_per_face") else None
    pending: dict[str, dict] = {}
    faces = 0
    try:
        for name, member in _tar_members(tar_file, data):
            key, _, ext = name.partition(".")
            pending.setdefault(key, {})[ext] = member
            if CODES_MEMBER in pending[key] and JSON_MEMBER in pending[key]:
                item = pending.pop(key)
                code_bytes = code_bytes or len(item[CODES_MEMBER])
                if len(item[CODES_MEMBER]) != code_bytes:
                    raise DamagedShard(
                        tar_file, f"face {faces + 1} has {len(item[CODES_MEMBER]) / 2:g} codes, not {code_bytes // 2}"
                    )
                faces += 1
                yield item[JSON_MEMBER], item[CODES_MEMBER]
    except tarfile.TarError as e:
        raise DamagedShard(tar_file, f"not a readable tar after {faces} face(s) ({first_line(e)})") from None
    if faces != stats["faces"] or pending:
        raise DamagedShard(tar_file, f"{faces} whole face(s) where its writer recorded {stats['faces']}")


def decode_meta(data: bytes, tar_file: Path | str = "shard") -> dict:
    try:
        meta = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedShard(Path(tar_file), f"a face's JSON is unreadable ({first_line(e)})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("texts"), list) or "image_id" not in meta:
        raise DamagedShard(Path(tar_file), "a face's JSON lacks image_id or texts")
    return meta


def decode_codes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u2").astype(np.int64)


def _tar_members(tar_file: Path, data: bytes):
    """Yield (name, bytes) of every member of a tar file whose bytes are `data`.

    Python's tarfile spends ~65 us on each header; the shard writer's plain ustar headers of regular files
    are read here directly. Any other header (pax, long name, bad checksum, end of data) hands the rest of
    the file, from that header on, to tarfile, so what is yielded (and raised) is what tarfile gives.
    """
    import io
    import tarfile

    headers, stop = _plain_headers(data)
    for offset, size in headers:
        start = offset + 512
        if len(data) < start + size:
            raise tarfile.ReadError("unexpected end of data")
        yield (
            data[offset : offset + 100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape"),
            data[start : start + size],
        )
        if len(data) < start + size + -size % 512:  # members are padded to 512-byte blocks
            raise tarfile.ReadError("unexpected end of data")
    if data[stop : stop + 512] == bytes(512):  # the end-of-archive block
        return
    rest = io.BytesIO(data)
    rest.seek(stop)  # tarfile counts offsets from here, as it would in the file
    with tarfile.open(fileobj=rest, mode="r:" if stop else "r:*") as tar:
        for member in tar:
            if not member.isfile():
                raise tarfile.TarError(f"member {member.name!r} is not a regular file")
            yield member.name, tar.extractfile(member).read()


def _plain_headers(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """(offset, size) of the leading plain ustar headers of regular files (short name, valid checksum) in `data`,
    and the offset of the first block that is not one."""
    found, checksums, offset = [], [], 0
    while (fields := _plain_header_fields(data[offset : offset + 512])) is not None:
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
    return (found[: bad[0]], found[bad[0]][0]) if len(bad) else (found, offset)


def _plain_header_fields(header: bytes) -> tuple[int, int] | None:
    """(size, checksum field) of a regular file's plain ustar header (short name); None for any other block."""
    if len(header) != 512 or header[257:262] != b"ustar" or header[156:157] not in (b"0", b"\0") or header[345] != 0:
        return None
    try:
        return int(header[124:136].rstrip(b"\0 ") or b"x", 8), int(header[148:156].rstrip(b"\0 ") or b"x", 8)
    except ValueError:
        return None
