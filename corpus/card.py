"""The corpus dataset card: the text of `README.md` (written by `corpus.layout`), with the YAML header that
the Hugging Face hub reads.

Sources, licences and access conditions and citations come from the manifests; counts from the
statistics. Nothing depends on the time of the build, so the card is byte-identical across runs.
"""

from __future__ import annotations

import yaml

from common.records import HUB_SPLIT_NAMES, SPLITS
from converters.helpers.converted import ConvertedSet

from .layout import CHART_PNG, IMAGES_FILE, PAIRS_FOLDER, ROOTS_FILE, STATS_JSON, STATS_MD

TALK2FACE_CITATION = """@inproceedings{li2022talk2face,
  title     = {Talk2Face: A Unified Sequence-based Framework for Diverse Face Generation and Analysis Tasks},
  author    = {Li, Yudong and Hou, Xianxu and Zhao, Zhe and Shen, Linlin and Yang, Xuefeng and Yan, Kimmo},
  booktitle = {Proceedings of the 30th ACM International Conference on Multimedia (ACM MM)},
  year      = {2022}
}"""

PAIR_COLUMNS = (
    ("dataset", "string", "source dataset (registry name, e.g. `celeba`)"),
    ("image", "string", "image path relative to that dataset's root"),
    (
        "image_id",
        "string",
        "the picture's id, the same in every dataset that has it (`celeba/000001`, `celeba_hq/123`)",
    ),
    ("box", "list<int32> or null", "crop `[left, top, right, bottom]` in source pixels"),
    ("split", "string", "`train`, `val` or `test`, after the leak-free resolution"),
    ("kind", "string", "`attributes` (key-value text) or `caption`"),
    ("text", "string", "the text, whitespace normalised"),
    ("attributes", "list<struct<key, value>> or null", "the key-value pairs behind an `attributes` text"),
    ("source", "string", "annotation file and line (or key) the pair came from"),
    ("person", "string or null", "`dataset:identity` where the dataset knows the person"),
    ("origin_id", "string or null", "image_id of the picture this face derives from (CelebA-HQ -> CelebA)"),
)
IMAGE_COLUMNS = (
    ("image_id", "string", "one row per unique image_id (sorted)"),
    ("dataset", "string", "the dataset the image is read from (the preferred source when several offer it)"),
    ("image", "string", f"path relative to the dataset's root in `{ROOTS_FILE}` (edit it to move the images)"),
    ("box", "list<int32> or null", "crop box"),
    ("split", "string", "the face's split (equal to its pairs' split)"),
)


def card_text(stats: dict, inputs: ConvertedSet) -> str:
    header = yaml.safe_dump(_hub_metadata(stats), sort_keys=False, allow_unicode=True, width=1000)
    body = [
        *_intro(stats),
        "",
        *_sources(stats, inputs),
        "",
        *_splits(stats),
        "",
        *_schema(),
        "",
        *_licences(inputs),
        "",
        *_citations(inputs),
        "",
    ]
    return f"---\n{header}---\n\n" + "\n".join(body)


def _size_category(n: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if n < limit:
            return label
    return "10M<n<100M"


def _hub_metadata(stats: dict) -> dict:
    return {
        "pretty_name": "Talk2Face face-text corpus",
        "language": ["en"],
        "license": "other",
        "license_name": "per-source-dataset-terms",
        "task_categories": ["text-to-image", "image-to-text"],
        "tags": ["faces", "face-attributes", "image-captioning", "talk2face"],
        "size_categories": [_size_category(stats["corpus"]["pairs"])],
        "configs": [
            {
                "config_name": "pairs",
                "default": True,
                "data_files": [
                    {"split": HUB_SPLIT_NAMES[split], "path": f"{PAIRS_FOLDER}/{split}-*.parquet"} for split in SPLITS
                ],
            },
            {"config_name": "images", "data_files": IMAGES_FILE},
        ],
    }


def _intro(stats: dict) -> list[str]:
    total = stats["corpus"]
    return [
        "# Talk2Face face-text corpus",
        "",
        (
            f"{total['pairs']:,} face-text pairs over {total['images']:,} unique images ({total['faces']:,} unique "
            f"faces), rebuilt from public face datasets as in Talk2Face (ACM MM 2022), whose Table 1 counts "
            f"{total['paper_total']:,}. Each pair is a face and either a key-value attribute text "
            "(`celeba gender: male; bald: false; ...`) or a caption."
        ),
        "",
        (
            f"**No image is included.** `{IMAGES_FILE}` names the file to read in your own copy of each "
            "dataset; obtain every dataset from its source under its own terms (see Licences)."
        ),
        "",
        "```python",
        "import datasets",
        'pairs = datasets.load_dataset("CORPUS")  # DatasetDict: train, validation, test (the leak-free splits)',
        'images = datasets.load_dataset("CORPUS", "images", split="train")  # one row per unique image',
        "```",
        "",
        (
            f"`{ROOTS_FILE}` names each dataset's folder; the `image` paths are relative to it. On another machine, "
            f"edit `{ROOTS_FILE}`: `tokenize-images` and `export` read the images from there."
        ),
        "",
        f"Statistics against the paper: [{STATS_MD}]({STATS_MD}), `{STATS_JSON}`, [{CHART_PNG}]({CHART_PNG}).",
    ]


def _sources(stats: dict, inputs: ConvertedSet) -> list[str]:
    rows = [
        "## Sources",
        "",
        "| dataset | title | access | pairs | paper (Table 1) | homepage |",
        "|---|---|---|---:|---:|---|",
    ]
    for name, entry in stats["datasets"].items():
        manifest = inputs.manifests.get(name) or {}
        pairs = f"{entry['pairs']:,}" if entry["present"] else "absent"
        paper = f"{entry['paper']:,}" if entry["paper"] is not None else "–"
        rows.append(
            f"| {name} | {manifest.get('title', name)} | {manifest.get('access', '–')} | {pairs} | {paper} | "
            f"{manifest.get('homepage', '–')} |"
        )
    if stats["absent"]:
        rows += ["", f"Absent from this build: {', '.join(stats['absent'])}."]
    return rows


def _splits(stats: dict) -> list[str]:
    total, splits = stats["corpus"], stats["splits"]
    ratios = ", ".join(f"{k} {v:g}" for k, v in splits["ratios"].items())
    return [
        "## Splits",
        "",
        "| | " + " | ".join(SPLITS) + " |",
        "|---|" + "---:|" * len(SPLITS),
        "| pairs | " + " | ".join(f"{total['splits'][s]:,}" for s in SPLITS) + " |",
        "| images | " + " | ".join(f"{total['images_by_split'][s]:,}" for s in SPLITS) + " |",
        "",
        (
            f"Leak-free: {splits['rule']}. Person splits use {ratios} with seed `{splits['seed']}` "
            f"({', '.join(splits['person_split_datasets']) or 'no dataset'}). Held-out wins moved "
            f"{splits['rows_moved_by_held_out_wins']:,} pairs of {splits['faces_moved_by_held_out_wins']:,} faces."
        ),
    ]


def _column_table(columns) -> list[str]:
    return ["| column | type | meaning |", "|---|---|---|"] + [f"| `{n}` | {t} | {m} |" for n, t, m in columns]


def _schema() -> list[str]:
    return [
        "## Schema",
        "",
        f"`{PAIRS_FOLDER}/SPLIT-NNNNN.parquet` (SPLIT: train, val, test):",
        "",
        *_column_table(PAIR_COLUMNS),
        "",
        f"`{IMAGES_FILE}`:",
        "",
        *_column_table(IMAGE_COLUMNS),
        "",
        (
            "`rejects.jsonl`: the pairs the corpus dropped (`dataset`, `source`, `reason`: "
            "`empty text` or `duplicate pair`, `detail`)."
        ),
    ]


def _licences(inputs: ConvertedSet) -> list[str]:
    rows = [
        "## Licences and access",
        "",
        (
            "The corpus holds annotations derived from each source; each source's terms apply to its pairs "
            "and images, and most allow non-commercial research use only."
        ),
        "",
    ]
    for source in inputs.sources:
        manifest = source.manifest
        if manifest:
            rows.append(f"- **{source.name}** ({manifest['access']}): {manifest['licence'].strip()}")
        else:
            rows.append(f"- **{source.name}**: no manifest; check the dataset's own terms")
    return rows


def _citations(inputs: ConvertedSet) -> list[str]:
    entries = [TALK2FACE_CITATION] + [s.manifest["citation"].strip() for s in inputs.sources if s.manifest]
    return ["## Citation", "", "```bibtex", "\n\n".join(entries), "```"]
