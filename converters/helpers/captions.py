"""Caption files (`<name>.txt`, one caption per line) and split lists: what the caption datasets share.

The record policy, in one place:
- A source record is one non-empty line of a caption file; whitespace-only lines are not records,
  and files without any caption are counted in the summary notes.
- Bytes are read as UTF-8 (a leading BOM is dropped; `\\r\\n` and `\\r` end lines too); bytes that are
  not UTF-8 become U+FFFD.
- U+FFFD: some manual captions hold mis-encoded characters (CelebA-Text-HQ's own loader replaces
  `\\ufffd\\ufffd` by a space). Each run of U+FFFD becomes one space and the caption is kept while the
  rest is readable; a line holding more U+FFFD than letters is rejected as `undecodable text`.
- A line with no letter or digit at all (`.`, `-`) is rejected as `empty caption`.
- Whitespace is normalised as `common.arrays.normalise_text` does.

Everything that depends only on the caption file (image id, split, image path) is computed once
per file and spread to its lines with `take`, so 300k captions cost little more than reading them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.arrays import normalise_text
from common.errors import UserError
from common.safe_pickle import as_names, load_data_pickle

from .base import Converter
from .celeba_family import MAPPING_FILE, origin_ids, read_mapping
from .root import IMAGE_EXTENSIONS, DatasetRoot
from .rows import make_table, prefixed
from .tables import read_bytes

CAPTION_SUFFIX = ".txt"
REPLACEMENT = "\ufffd"
SPLIT_FILES = ("filenames.pickle", "filenames.pkl")  # inside a `train/` or `test/` folder (AttnGAN layout)


@dataclass
class Captions:
    """The kept caption lines (`columns`: source, text, and `file`, an index into `stems`)."""

    stems: pa.Array  # one per caption file, in file order
    columns: dict

    def spread(self, per_file: pa.Array) -> pa.Array:
        """A per-file column as a per-line column."""
        return per_file.take(pa.array(self.columns["file"]))

    def reject_files(self, conv: Converter, bad_files: np.ndarray, reason: str, detail: pa.Array) -> None:
        """Reject every line of the files where `bad_files` is true, `detail` being per file."""
        bad = bad_files[self.columns["file"]]
        if bad.any():
            self.columns = conv.reject_where(self.columns, bad, reason, self.spread(detail))


# -- folders ----------------------------------------------------------------------------------
def natural_key(name: str):
    stem = name.rsplit(".", 1)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def caption_files(tree: DatasetRoot, folder: Path) -> list[str]:
    """The `.txt` files of a folder (hidden files such as macOS `._0.txt` skipped), 0, 1, 2 ... 10 order."""
    names = [n for n in tree.files(folder) if n.lower().endswith(CAPTION_SUFFIX) and not n.startswith(".")]
    return sorted(names, key=natural_key)


def stem_of(names: pa.Array) -> pa.Array:
    """Basename without extension: `../data/CelebAimg/12.jpg` -> `12`, `Image\\00012.png` -> `00012`."""
    base = pc.replace_substring_regex(names, r"^.*[/\\]", "")
    return pc.replace_substring_regex(base, r"\.(?i:jpe?g|png|bmp|webp|txt)$", "")


# -- caption lines ----------------------------------------------------------------------------
def ended(data: bytes) -> bytes:
    """A file's bytes ending in a newline, so that joined files never run one line into the next."""
    return data if not data or data.endswith(b"\n") else data + b"\n"


def read_captions(conv: Converter, folder: Path, per_file: int) -> Captions:
    """Every caption line of the `.txt` files in `folder`: counted as records, bad texts rejected."""
    names = caption_files(conv.tree, folder)
    if not names:
        raise UserError(f"{conv.name}: no .txt caption files in {folder}; expected one <name>.txt per image")
    blobs = [ended(read_bytes(folder / name)) for name in names]
    lines_per_file = np.array([b.count(b"\n") for b in blobs], dtype=np.int64)
    # one decode and one split for all files: each file ends with '\n', so no line straddles two files
    decoded = b"".join(blobs).decode("utf-8", errors="replace")
    lines = pc.list_flatten(pc.split_pattern(pa.array([decoded], pa.large_string()), "\n"))[:-1].cast(pa.string())
    file_of_line = np.repeat(np.arange(len(names)), lines_per_file)
    first_line = np.cumsum(lines_per_file) - lines_per_file  # index of each file's line 1
    line_number = np.arange(len(file_of_line)) - np.repeat(first_line, lines_per_file) + 1

    text = normalise_text(lines)
    keep = pc.not_equal(text, "").to_numpy(zero_copy_only=False)
    file_of_line, line_number = file_of_line[keep], line_number[keep]
    conv.count_records(len(file_of_line))
    note_odd_files(conv, folder, names, np.bincount(file_of_line, minlength=len(names)), per_file)

    prefix = conv.tree.prefix(folder)
    sources = pa.array([f"{prefix}{name}:" for name in names], pa.string()).take(pa.array(file_of_line))
    columns = {
        "source": pc.binary_join_element_wise(sources, pa.array(line_number).cast(pa.string()), ""),
        "file": file_of_line,
        "text": text.filter(pa.array(keep)),
    }
    columns = clean_texts(conv, columns, REPLACEMENT in decoded)
    return Captions(pa.array([name[: -len(CAPTION_SUFFIX)] for name in names], pa.string()), columns)


def note_odd_files(conv: Converter, folder: Path, names: list[str], captions: np.ndarray, per_file: int) -> None:
    for what, mask in (
        ("hold no caption", captions == 0),
        (f"hold fewer than {per_file} captions", (captions > 0) & (captions < per_file)),
        (f"hold more than {per_file} captions", captions > per_file),
    ):
        if mask.any():
            example = names[int(np.flatnonzero(mask)[0])]
            conv.notes.append(f"{int(mask.sum())} caption files in {conv.tree.rel(folder)} {what} (e.g. {example})")


def clean_texts(conv: Converter, columns: dict, any_replacement: bool) -> dict:
    """Apply the U+FFFD and empty-caption policy of the module docstring."""
    if any_replacement:  # counting letters is slow: only on the lines holding U+FFFD
        marked = pc.match_substring(columns["text"], REPLACEMENT).to_numpy(zero_copy_only=False)
        text = columns["text"].filter(pa.array(marked))
        undecodable = np.zeros(len(marked), dtype=bool)
        undecodable[marked] = pc.count_substring(text, REPLACEMENT).to_numpy(
            zero_copy_only=False
        ) > pc.count_substring_regex(text, r"\pL").to_numpy(zero_copy_only=False)
        columns = conv.reject_where(columns, undecodable, "undecodable text", "more U+FFFD than letters")
        marked = pa.array(marked[~undecodable])
        cleaned = normalise_text(pc.replace_substring_regex(columns["text"].filter(marked), REPLACEMENT + "+", " "))
        columns["text"] = pc.replace_with_mask(columns["text"], marked, cleaned)
    readable = pc.match_substring_regex(columns["text"], r"[\pL\pN]").to_numpy(zero_copy_only=False)
    return conv.reject_where(columns, ~readable, "empty caption", "no letter or digit")


# -- splits -----------------------------------------------------------------------------------
def find_split_pickle(conv: Converter, split: str) -> Path:
    """`<split>/filenames.pickle` (AttnGAN layout, any case), else a flat `<split>_filenames.pickle`."""
    folder = conv.tree.find_dir(split, required=False)
    found = folder and conv.tree.find_file(*SPLIT_FILES, under=folder, required=False)
    flat = (f"{split}_filenames.pickle", f"filenames_{split}.pickle", f"{split}.pickle", f"{split}.pkl")
    found = found or conv.tree.find_file(*flat, required=False)
    if found is None:
        raise UserError(
            f"{conv.name}: no {split}/filenames.pickle (nor {', '.join(flat)}) under {conv.root}; "
            f"expected the {split} list of the download"
        )
    return found


def read_split_pickle(path: Path) -> pa.Array:
    """The image names of a pickled list (str, bytes or int CelebA-HQ indices) as stems."""
    data = load_data_pickle(path)
    if isinstance(data, (list, tuple)):
        data = [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in data]
    return stem_of(pa.array(as_names(data, path), pa.string()))


def assign_splits(conv: Converter, caps: Captions, lists: dict[str, pa.Array]) -> None:
    """`split` from the lists of stems; the lines of a file in no list (or in two) are rejected `no split`."""
    hits = {
        split: pc.is_in(caps.stems, value_set=pc.unique(names)).to_numpy(zero_copy_only=False)
        for split, names in lists.items()
    }
    found = np.sum(list(hits.values()), axis=0)
    split = np.full(len(caps.stems), None, dtype=object)
    for name, hit in hits.items():
        split[hit & (found == 1)] = name
    listed = " or ".join(lists)
    detail = np.where(found == 0, f"not in the {listed} list", f"in both the {listed} lists")
    caps.reject_files(conv, found != 1, "no split", pa.array(detail.tolist(), pa.string()))
    caps.columns["split"] = caps.spread(pa.array(split.tolist(), pa.string()))
    listed_names = pc.unique(pa.concat_arrays(list(lists.values())))
    unmatched = listed_names.filter(pc.invert(pc.is_in(listed_names, value_set=caps.stems)))
    if len(unmatched):
        conv.notes.append(
            f"{len(unmatched)} names in the split lists have no caption file (e.g. {unmatched[0].as_py()!r})"
        )


# -- images and ids ---------------------------------------------------------------------------
def attach_images(conv: Converter, caps: Captions, folder: Path, extension: str) -> None:
    """`image` = the file in `folder` with the caption file's stem (any image extension, `extension`
    preferred); lines without one are rejected `image missing` by the base class."""
    files = pa.array(sorted(conv.tree.files(folder)), pa.string())
    ext = pc.utf8_lower(pc.extract_regex(files, r"(?P<ext>\.[^.]*)$").field("ext"))
    files = files.filter(pc.is_in(ext, value_set=pa.array(sorted(IMAGE_EXTENSIONS))))
    order = pa.table(
        {"stem": stem_of(files), "other": pc.invert(pc.ends_with(pc.utf8_lower(files), extension)), "name": files}
    ).sort_by([("stem", "ascending"), ("other", "ascending"), ("name", "ascending")])
    # index_in finds the first of equal stems: the preferred extension
    found = order["name"].combine_chunks().take(pc.index_in(caps.stems, value_set=order["stem"].combine_chunks()))
    names = pc.coalesce(found, pc.binary_join_element_wise(caps.stems, extension, ""))
    caps.columns["image"] = caps.spread(prefixed(conv.tree.prefix(folder), names))
    caps.columns = conv.drop_missing_images(caps.columns, [folder])


def numbered_ids(conv: Converter, caps: Captions, prefix: str, count: int, width: int, what: str) -> pa.Array:
    """`image_id = prefix + number` for caption files named by a number below `count` (zero-padded to
    `width`); the lines of other files are rejected as `bad image name`. Returns the numbers per file."""
    numeric = pc.match_substring_regex(caps.stems, r"^[0-9]{1,9}$").to_numpy(zero_copy_only=False)
    numbers = np.full(len(caps.stems), -1, dtype=np.int64)
    if numeric.any():
        numbers[numeric] = pc.cast(caps.stems.filter(pa.array(numeric)), pa.int64()).to_numpy()
    detail = pc.binary_join_element_wise(f"expected {what} (0-{count - 1}), found ", caps.stems, "")
    caps.reject_files(conv, (numbers < 0) | (numbers >= count), "bad image name", detail)
    digits = pa.array(numbers).cast(pa.string())
    caps.columns["image_id"] = caps.spread(prefixed(prefix, pc.utf8_lpad(digits, width, "0") if width > 1 else digits))
    return digits


def find_mapping(conv: Converter, option: Path | None, search: tuple[Path, ...]) -> Path | None:
    """CelebAMask-HQ's mapping file: the option (checked), else the first found in `search`, else None (noted)."""
    if option is not None:
        return conv.tree.given(option, "mapping", expected=f"CelebAMask-HQ's {MAPPING_FILE}")
    for folder in search:
        path = conv.tree.find_file(MAPPING_FILE, under=folder, required=False)
        if path is not None:
            return path
    conv.notes.append(
        f"origin_id is null: no {MAPPING_FILE} found (pass mapping=PATH from CelebAMask-HQ "
        "to link these faces to CelebA)"
    )
    return None


def celeba_origins(conv: Converter, caps: Captions, hq_indices: pa.Array, mapping: Path | None) -> pa.Array | None:
    """`celeba/NNNNNN` per line: the CelebA image behind each line's CelebA-HQ index (per file)."""
    if mapping is None:
        return None
    conv.notes.append(f"origin_id from {mapping}")
    return caps.spread(origin_ids(hq_indices, read_mapping(mapping)))


def caption_table(conv: Converter, caps: Captions, origin_id: pa.Array | None = None) -> pa.Table:
    cols = caps.columns
    return make_table(
        len(cols["text"]),
        dataset=conv.name,
        image=cols["image"],
        image_id=cols["image_id"],
        split=cols["split"],
        kind="caption",
        text=cols["text"],
        source=cols["source"],
        origin_id=origin_id,
    )
