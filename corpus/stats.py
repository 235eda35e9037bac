"""Corpus statistics against the paper: the content of `stats.json`, `STATS.md` and the bar chart of pairs
per dataset (`corpus.layout` writes the files).

Counts are taken with numpy over integer codes (dataset, split, kind, image, face) of every row.
Every difference from the paper's Table 1 is explained per dataset: absent, rejected or filtered
by the converter (its summary), rejected or deduplicated by the corpus, official vs paper count.
Nothing here depends on time or the machine, so the same corpus gives the same files.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import converters
from common.arrays import to_numpy
from common.records import KINDS, SPLITS

from .hygiene import TOKEN_METHOD, token_lengths
from .layout import CHART_PNG
from .leakfree import move_counts, persons_in_train_and_test
from .state import Corpus

SPLIT_RULE = (
    "held-out wins: a face (origin_id, else image_id) that is test or val in any dataset is test or val "
    "in all (test > val > train); datasets without an official split are split by person "
    "(person, else face), inheriting the official split of a face they share, else by hash_split"
)
TOKEN_BINS = (1, 4, 8, 16, 32, 64, 128, 256, 512)  # histogram edges; the last bin is open


def corpus_stats(corpus: Corpus) -> dict:
    names = list(converters.DATASETS)
    kept = corpus.hygiene.kept
    tokens = token_lengths(corpus.hygiene.text)
    kinds = to_numpy(pc.index_in(corpus.table.column("kind"), value_set=pa.array(KINDS))).astype(np.int64)
    moves = {
        "by_person": move_counts(
            corpus.dataset_codes, corpus.splits.converted, corpus.splits.assigned, kept, converters.DATASETS
        ),
        "held_out_wins": move_counts(
            corpus.dataset_codes, corpus.splits.assigned, corpus.splits.final, kept, converters.DATASETS
        ),
    }
    per_dataset = _dataset_counts(corpus, kept, kinds, tokens) | moves
    return {
        "corpus": _totals(corpus, kept, kinds),
        "datasets": {name: _dataset_entry(corpus, name, per_dataset) for name in names},
        "absent": list(corpus.inputs.absent),
        "splits": _split_report(corpus, kept, moves),
        "hygiene": {
            "whitespace_normalised": corpus.hygiene.normalised,
            "empty_texts_rejected": int(corpus.hygiene.empty.sum()),
            "duplicate_pairs_removed": int(corpus.hygiene.duplicate.sum()),
        },
        "text_tokens": _token_report(tokens[kept], kinds[kept]),
        "options": corpus.options,
    }


# -- counting ------------------------------------------------------------------------------
def _bincount(codes: np.ndarray, n: int, weights=None) -> np.ndarray:
    return np.bincount(codes.astype(np.int64), weights=weights, minlength=n)


def _seen(dataset_codes: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
    """Boolean (dataset, code) matrix: which codes occur in which dataset."""
    seen = np.zeros((n, int(codes.max(initial=-1)) + 1), dtype=bool)
    seen[dataset_codes, codes] = True
    return seen


def _dataset_counts(corpus: Corpus, kept: np.ndarray, kinds: np.ndarray, tokens: np.ndarray) -> dict:
    n = len(converters.DATASETS)
    d = corpus.dataset_codes.astype(np.int64)
    dk = d[kept]
    return {
        "pairs": _bincount(dk, n),
        "empty": _bincount(d[corpus.hygiene.empty], n),
        "duplicates": _bincount(d[corpus.hygiene.duplicate], n),
        "splits": _bincount(dk * 3 + corpus.splits.final[kept], n * 3).reshape(n, 3),
        "kinds": _bincount(dk * len(KINDS) + kinds[kept], n * len(KINDS)).reshape(n, len(KINDS)),
        "images": _seen(dk, corpus.image_codes[kept], n).sum(axis=1),
        "faces": _seen(dk, corpus.splits.face_codes[kept], n).sum(axis=1),
        "tokens": _bincount(dk, n, weights=tokens[kept].astype(np.float64)),
        "read_from": _bincount(
            to_numpy(pc.index_in(corpus.images.column("dataset"), value_set=pa.array(converters.DATASETS))), n
        ),
        "straddling": persons_in_train_and_test(
            corpus.dataset_codes, corpus.table.column("person"), corpus.splits.final, kept, converters.DATASETS
        ),
    }


def _totals(corpus: Corpus, kept: np.ndarray, kinds: np.ndarray) -> dict:
    final = corpus.splits.final[kept]
    by_kind_split = _bincount(kinds[kept] * 3 + final, len(KINDS) * 3).reshape(len(KINDS), 3)
    image_splits = to_numpy(pc.index_in(corpus.images.column("split"), value_set=pa.array(SPLITS)))
    offered_by = _seen(corpus.dataset_codes[kept], corpus.image_codes[kept], len(converters.DATASETS)).sum(axis=0)
    return {
        "pairs": int(kept.sum()),
        "images": corpus.images.num_rows,
        "faces": _distinct(corpus.splits.face_codes[kept]),
        "images_offered_by_several_datasets": int((offered_by > 1).sum()),
        "splits": {s: int(by_kind_split[:, i].sum()) for i, s in enumerate(SPLITS)},
        "kinds": {k: int(by_kind_split[j].sum()) for j, k in enumerate(KINDS)},
        "kinds_by_split": {k: {s: int(by_kind_split[j, i]) for i, s in enumerate(SPLITS)} for j, k in enumerate(KINDS)},
        "images_by_split": {s: int((image_splits == i).sum()) for i, s in enumerate(SPLITS)},
        "paper_total": sum(_paper(m) or 0 for m in corpus.inputs.manifests.values()),
    }


def _distinct(codes: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(codes))) if len(codes) else 0


def _split_report(corpus: Corpus, kept: np.ndarray, moves: dict) -> dict:
    splits = corpus.splits
    moved = kept & (splits.assigned != splits.final)
    return {
        "rule": SPLIT_RULE,
        "ratios": corpus.options["split_ratios"],
        "seed": corpus.options["seed"],
        "person_split_datasets": [s.name for s in corpus.inputs.sources if s.split_policy == "none"],
        "moves": moves,
        "rows_moved_by_held_out_wins": int(moved.sum()),
        "faces_moved_by_held_out_wins": _distinct(splits.face_codes[moved]),
        "image_ids_with_conflicting_origins": splits.origin_conflicts,
    }


def _token_summary(tokens: np.ndarray) -> dict:
    if len(tokens) == 0:
        return {"texts": 0}
    edges = np.array((0, *TOKEN_BINS, np.iinfo(np.int64).max))
    histogram = np.histogram(tokens, bins=edges)[0]
    labels = [f"{lo}-{hi - 1}" if hi - lo > 1 else str(lo) for lo, hi in itertools.pairwise(edges[:-1])]
    labels.append(f">={TOKEN_BINS[-1]}")
    return {
        "texts": len(tokens),
        "mean": round(float(tokens.mean()), 2),
        "p50": int(np.quantile(tokens, 0.5, method="inverted_cdf")),
        "p90": int(np.quantile(tokens, 0.9, method="inverted_cdf")),
        "p99": int(np.quantile(tokens, 0.99, method="inverted_cdf")),
        "max": int(tokens.max()),
        "histogram": {label: int(n) for label, n in zip(labels, histogram)},
    }


def _token_report(tokens: np.ndarray, kinds: np.ndarray) -> dict:
    return {
        "method": TOKEN_METHOD,
        "all": _token_summary(tokens),
        **{kind: _token_summary(tokens[kinds == j]) for j, kind in enumerate(KINDS)},
    }


# -- per dataset ---------------------------------------------------------------------------
def _paper(manifest: dict | None) -> int | None:
    return manifest["counts"]["paper"] if manifest else None


def _official(manifest: dict | None) -> int | None:
    if not manifest:
        return None
    official = manifest["counts"]["official"]
    return official.get("total", sum(v for v in official.values() if isinstance(v, int)))


def _dataset_entry(corpus: Corpus, name: str, counts: dict) -> dict:
    manifest = corpus.inputs.manifests.get(name)
    source = next((s for s in corpus.inputs.sources if s.name == name), None)
    entry = {
        "present": source is not None,
        "title": manifest["title"] if manifest else name,
        "paper": _paper(manifest),
        "official": _official(manifest),
    }
    if source is None:
        entry["pairs"] = 0
        entry["explanation"] = _explain_absent(name, manifest)
        return entry
    d = converters.DATASETS.index(name)
    summary = source.summary
    pairs = int(counts["pairs"][d])
    entry.update(
        {
            "split_rule": "by person" if source.split_policy == "none" else "official",
            "records_in": summary.get("records_in"),
            "converted_rows": source.table.num_rows,
            "converter_rejects": summary.get("rejects", {"total": 0, "by_reason": {}}),
            "converter_options": summary.get("options", {}),
            "converter_notes": summary.get("notes", []),
            "empty_texts_rejected": int(counts["empty"][d]),
            "duplicate_pairs_removed": int(counts["duplicates"][d]),
            "pairs": pairs,
            "images": int(counts["images"][d]),
            "faces": int(counts["faces"][d]),
            "images_read_from_here": int(counts["read_from"][d]),
            "splits_converted": summary.get("splits", {}),
            "splits": {s: int(counts["splits"][d, i]) for i, s in enumerate(SPLITS)},
            "kinds": {k: int(counts["kinds"][d, j]) for j, k in enumerate(KINDS) if counts["kinds"][d, j]},
            "split_moves": {
                "by_person": counts["by_person"].get(name, {}),
                "held_out_wins": counts["held_out_wins"].get(name, {}),
            },
            "persons_in_train_and_test": counts["straddling"].get(name, 0),
            "mean_tokens": round(float(counts["tokens"][d] / pairs), 2) if pairs else 0.0,
            "difference_vs_paper": pairs - entry["paper"] if entry["paper"] is not None else None,
        }
    )
    entry["explanation"] = _explain_present(entry)
    return entry


def _explain_absent(name: str, manifest: dict | None) -> list[str]:
    lines = [f"absent: no {name}.parquet in the converted folder, so 0 pairs"]
    if manifest:
        lines.append(f"access: {manifest['access']} ({manifest['homepage']})")
        lines.append(f"the paper counts {manifest['counts']['paper']:,}")
    return lines


def _explain_present(e: dict) -> list[str]:
    lines = []
    if e["paper"] is not None:
        pct = f" ({100 * e['difference_vs_paper'] / e['paper']:+.1f}%)" if e["paper"] else ""
        lines.append(f"{e['pairs']:,} pairs vs {e['paper']:,} in the paper: {e['difference_vs_paper']:+,}{pct}")
    if e["official"] is not None and e["paper"] is not None and e["official"] != e["paper"]:
        lines.append(
            f"the official release counts {e['official']:,} where the paper says {e['paper']:,} "
            f"(the paper rounds or counts another release)"
        )
    if e["records_in"] is not None:
        lines.append(f"converter read {e['records_in']:,} source records and wrote {e['converted_rows']:,} rows")
    rejects = e["converter_rejects"]
    if rejects.get("total"):
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in rejects.get("by_reason", {}).items())
        lines.append(f"converter rejected {rejects['total']:,} records ({reasons})")
    if e["converter_options"]:
        lines.append("converter options: " + ", ".join(f"{k}={v}" for k, v in e["converter_options"].items()))
    lines.extend(f"converter note: {note}" for note in e["converter_notes"])
    if e["empty_texts_rejected"]:
        lines.append(f"corpus rejected {e['empty_texts_rejected']:,} empty texts")
    if e["duplicate_pairs_removed"]:
        lines.append(f"corpus removed {e['duplicate_pairs_removed']:,} exact duplicate pairs")
    if e["images"] and e["pairs"] != e["images"]:
        lines.append(f"{e['images']:,} images with {e['pairs'] / e['images']:.2f} texts each on average")
    lines.extend(_explain_moves(e))
    return lines


def _explain_moves(e: dict) -> list[str]:
    lines = []
    for step, label in (("by_person", "split by person"), ("held_out_wins", "held-out wins moved")):
        moves = e["split_moves"][step]
        if moves:
            lines.append(f"{label}: " + ", ".join(f"{move} {n:,}" for move, n in moves.items()))
    if e["persons_in_train_and_test"]:
        lines.append(
            f"{e['persons_in_train_and_test']:,} persons have pairs in both train and test "
            f"(an official split that is not by person, or a face moved by held-out wins)"
        )
    return lines


# -- the text and the chart ----------------------------------------------------------------
def _n(value) -> str:
    return "–" if value is None else f"{value:,}"


def markdown(stats: dict) -> str:
    total = stats["corpus"]
    lines = [
        "# Corpus statistics",
        "",
        (
            f"{total['pairs']:,} face-text pairs ({total['paper_total']:,} in the paper's Table 1) over "
            f"{total['images']:,} unique images and {total['faces']:,} unique faces."
        ),
        "",
        *_dataset_table(stats),
        "",
        *_kind_split_table(total),
        "",
        *_split_section(stats),
        "",
        *_token_section(stats["text_tokens"]),
        "",
        "## Differences from the paper, per dataset",
        "",
    ]
    for name, entry in stats["datasets"].items():
        lines.append(f"- **{name}**: " + "; ".join(entry["explanation"]))
    lines += ["", f"![pairs per dataset]({CHART_PNG})", ""]
    return "\n".join(lines)


def _dataset_table(stats: dict) -> list[str]:
    rows = [
        (
            "| dataset | paper | official | converted | converter rejects | empty | duplicates | pairs | vs paper "
            "| images | train | val | test | mean tokens |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in stats["datasets"].items():
        if not e["present"]:
            rows.append(
                f"| {name} (absent) | {_n(e['paper'])} | {_n(e['official'])} | – | – | – | – | 0 | "
                f"{_n(-e['paper'] if e['paper'] is not None else None)} | – | – | – | – | – |"
            )
            continue
        s = e["splits"]
        rows.append(
            f"| {name} | {_n(e['paper'])} | {_n(e['official'])} | {_n(e['converted_rows'])} | "
            f"{_n(e['converter_rejects'].get('total', 0))} | {_n(e['empty_texts_rejected'])} | "
            f"{_n(e['duplicate_pairs_removed'])} | {_n(e['pairs'])} | {_n(e['difference_vs_paper'])} | "
            f"{_n(e['images'])} | {_n(s['train'])} | {_n(s['val'])} | {_n(s['test'])} | {e['mean_tokens']} |"
        )
    t = stats["corpus"]
    rows.append(
        f"| **total** | {_n(t['paper_total'])} | | | | {_n(stats['hygiene']['empty_texts_rejected'])} | "
        f"{_n(stats['hygiene']['duplicate_pairs_removed'])} | {_n(t['pairs'])} | "
        f"{_n(t['pairs'] - t['paper_total'])} | {_n(t['images'])} | {_n(t['splits']['train'])} | "
        f"{_n(t['splits']['val'])} | {_n(t['splits']['test'])} | |"
    )
    return rows


def _kind_split_table(total: dict) -> list[str]:
    rows = [
        "## Pairs per kind and split",
        "",
        "| kind | " + " | ".join(SPLITS) + " | total |",
        "|---|" + "---:|" * (len(SPLITS) + 1),
    ]
    for kind, by_split in total["kinds_by_split"].items():
        rows.append(f"| {kind} | " + " | ".join(_n(by_split[s]) for s in SPLITS) + f" | {_n(total['kinds'][kind])} |")
    rows.append(
        "| images | " + " | ".join(_n(total["images_by_split"][s]) for s in SPLITS) + f" | {_n(total['images'])} |"
    )
    rows += [
        "",
        (
            f"{total['images_offered_by_several_datasets']:,} images are offered by more than one dataset; "
            "each is read once, from the preferred source (see `options.image_source_preference`)."
        ),
    ]
    return rows


def _split_section(stats: dict) -> list[str]:
    splits = stats["splits"]
    ratios = ", ".join(f"{k} {v:g}" for k, v in splits["ratios"].items())
    rows = [
        "## Leak-free splits",
        "",
        f"Rule: {splits['rule']}.",
        "",
        f"Split by person ({ratios}, seed `{splits['seed']}`): {', '.join(splits['person_split_datasets']) or 'none'}.",
        "",
        (
            f"Held-out wins moved {splits['rows_moved_by_held_out_wins']:,} pairs of "
            f"{splits['faces_moved_by_held_out_wins']:,} faces."
        ),
        "",
        "| step | dataset | move | pairs |",
        "|---|---|---|---:|",
    ]
    for step, per_dataset in splits["moves"].items():
        for name, moves in per_dataset.items():
            rows += [f"| {step.replace('_', ' ')} | {name} | {move} | {n:,} |" for move, n in moves.items()]
    return rows


def _token_section(tokens: dict) -> list[str]:
    rows = [
        "## Text length (tokens)",
        "",
        f"Method: {tokens['method']}.",
        "",
        "| kind | texts | mean | p50 | p90 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("all", *KINDS):
        t = tokens[kind]
        if t["texts"]:
            rows.append(
                f"| {kind} | {t['texts']:,} | {t['mean']} | {t['p50']} | {t['p90']} | {t['p99']} | {t['max']} |"
            )
    if tokens["all"]["texts"]:
        labels = list(tokens["all"]["histogram"])
        rows += ["", "| kind | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for kind in ("all", *KINDS):
            if tokens[kind]["texts"]:
                rows.append(f"| {kind} | " + " | ".join(f"{n:,}" for n in tokens[kind]["histogram"].values()) + " |")
    return rows


def bar_chart(stats: dict):
    """Pairs per dataset in the corpus beside the paper's Table 1 count: a matplotlib Figure of horizontal bars.

    The axis is logarithmic: a sample corpus of tens of pairs and the paper's hundreds of thousands are both
    readable (a dataset with 0 pairs has no bar; an absent one is labelled so).
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import NullFormatter, StrMethodFormatter

    names = list(stats["datasets"])
    corpus = [stats["datasets"][n]["pairs"] for n in names]
    paper = [stats["datasets"][n]["paper"] or 0 for n in names]
    y = np.arange(len(names))
    figure = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.barh(y - 0.2, paper, height=0.4, label="paper (Table 1)", color="#bbbbbb")
    axes.barh(y + 0.2, corpus, height=0.4, label="corpus", color="#3465a4")
    axes.set_yticks(y, [n if stats["datasets"][n]["present"] else f"{n} (absent)" for n in names])
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlim(left=0.8, right=max([*corpus, *paper, 1]) * 2)
    axes.set_xlabel("face-text pairs (log scale)")
    axes.set_title(f"Pairs per dataset: {sum(corpus):,} in the corpus, {sum(paper):,} in the paper")
    figure.legend(loc="outside lower center", ncols=2)  # below the axis: the bars reach both ends of a log axis
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    return figure
