"""Evaluation on held-out faces: the paper's metrics for a checkpoint.

    python cli.py evaluate --checkpoint runs/r1 --shards shards/ --split val [--limit 200] [--out eval/]

For every face of the split (read from `SHARDS/<split>/`, or from `SHARDS/` keeping that split's faces):
  * attributes: for every `key: value` pair, the greedy value after the prompt `<dataset> <key>:` (the
    start of a training target), stopped at `;` or [SEP]. Accuracy compares token ids with the label's;
    where the label is a number (ages) also the mean absolute error (an answer that is not a number is
    counted apart). Where the manifest gives the key's vocabulary, the candidates are also ranked by
    log-likelihood and that accuracy is reported beside the greedy one (greedy pays for invalid labels).
  * captions: one greedy caption per face, BLEU-4 / ROUGE-L / CIDEr-D against all references of the face in
    that dataset (`trainer.metrics`, pure Python, equal to pycocoevalcap's to 1e-12), and METEOR 1.5 through
    pycocoevalcap's Java jar where Java is present (`n/a (needs Java)` otherwise; no other METEOR stands in).
  * per-task loss: the four training layouts of each face (first caption, first attribute text), mean
    cross-entropy per target token.
  * with `--fid` (`trainer.synthesis`): FID and IS of faces generated from the split's captions against the
    split's real faces (the paper's Table 2), and with `--clip` their mean CLIP score against their texts.
Every row of the paper's Tables 2-5 that this run can compute is printed beside the paper's figure
(`paper_figures.json`); the rest print n/a.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from common.errors import UserError
from common.progress import Progress
from trainer import metrics
from trainer.generate import TEXT, Sampling, decode, first_value, score, value_ends
from trainer.sequences import IGNORE, attribute_head, pad_batch

log = logging.getLogger(__name__)

PAPER_FIGURES = Path(__file__).parent / "paper_figures.json"
REPORT_JSON, REPORT_TABLE = "evaluation.json", "evaluation.md"
TASKS = ("caption_to_face", "face_to_caption", "attributes_to_face", "face_to_attributes")


@dataclass(frozen=True)
class EvaluateConfig:
    split: str = "val"
    limit: int | None = None  # at most this many faces
    batch_size: int = 64  # rows decoded, scored or measured together
    max_value_tokens: int = 16  # a greedy attribute value stops at `;`, [SEP] or this many tokens
    meteor: bool = True  # METEOR through Java (seconds to start); off = n/a (not asked)
    quiet: bool = False  # no progress lines
    skip_bad_shards: bool = False  # leave damaged shards out (named in the report) instead of refusing them

    def __post_init__(self):
        problems = []
        if self.limit is not None and self.limit < 1:
            problems.append(f"--limit {self.limit}: need at least 1 face (leave it out for the whole split)")
        if self.batch_size < 1:
            problems.append(f"--batch-size {self.batch_size}: need at least 1")
        if self.split not in ("val", "test"):
            problems.append(f"--split {self.split!r}: expected val or test")
        if problems:
            raise UserError("; ".join(problems))


# ---------------------------------------------------------------------- inputs
def read_faces(
    shards: Path, split: str, limit: int | None = None, skip_bad: bool = False, skipped: list | None = None
) -> list[tuple[dict, list[int]]]:
    """(meta, codes) of the split's faces: `SHARDS/<split>/` when it exists, else `SHARDS/` filtered by split.

    Damaged shards are refused in one line, or with `skip_bad` left out and appended (their message) to `skipped`.
    """
    from facetokens.shards import read_samples, tar_urls

    shards = Path(shards)
    folder, keep = (shards / split, None) if (shards / split).is_dir() else (shards, split)
    if not tar_urls(folder):
        raise UserError(f"--shards {shards}: no shard-*.tar in {folder}")
    faces = []
    for meta, codes in read_samples(folder, skip_bad=skip_bad, skipped=skipped):
        if keep is None or meta.get("split") == keep:
            faces.append((meta, codes.tolist()))
            if limit is not None and len(faces) >= limit:
                break
    if not faces:
        raise UserError(f"--shards {shards}: no {split} faces in {folder}")
    return faces


def skipped_measurements(faces, split: str) -> dict[str, str]:
    """The measurements that have no data in these faces, each with the reason the report prints."""
    kinds = {text["kind"] for meta, _ in faces for text in meta["texts"]}
    reasons = {}
    if "attributes" not in kinds:
        reasons["attributes"] = f"no {split} face has attributes (face_to_attributes and attributes_to_face)"
    if "caption" not in kinds:
        reasons["captions"] = f"no {split} face has a caption (face_to_caption and caption_to_face)"
    return reasons


def vocabularies() -> dict[str, dict[str, list[str]]]:
    """Candidate values per dataset and key, read from the manifests' label tables."""
    import manifests

    def values(mapping) -> list[str]:
        return list(mapping.values()) if isinstance(mapping, dict) else list(mapping)

    def spelled(name: str) -> str:
        return " ".join(name.replace("_", " ").split()).lower()

    out: dict[str, dict[str, list[str]]] = {}
    celeba = manifests.load("celeba")["labels"]
    out["celeba"] = {}
    for name in celeba["attributes"]:
        renamed = celeba["renamed"].get(name)
        out["celeba"][renamed["key"] if renamed else spelled(name)] = (
            [renamed["true"], renamed["false"]] if renamed else values(celeba["values"])
        )
    affectnet = manifests.load("affectnet")["labels"]
    dropped = set(affectnet["no_expression"]) | set(affectnet["non_face"])
    out["affectnet"] = {"expression": [v for k, v in affectnet["expression"].items() if k not in dropped]}
    out["expw"] = {"expression": values(manifests.load("expw")["labels"]["expression"])}
    rafdb = manifests.load("rafdb")["labels"]
    out["rafdb"] = {
        "expression": values(rafdb["expression"]["basic"]) + values(rafdb["expression"]["compound"]),
        **{k: values(v) for k, v in rafdb["manual"].items()},
    }
    fairface = manifests.load("fairface")["labels"]
    out["fairface"] = {k: values(fairface[k]) for k in ("age", "gender", "race")}
    out["afad"] = {"gender": values(manifests.load("afad")["labels"]["gender"])}
    out["imdb_wiki"] = {"gender": values(manifests.load("imdb_wiki")["labels"]["gender"])}
    fs2k = manifests.load("fs2k")["labels"]
    out["fs2k"] = {fs2k["keys"][k]: values(v) for k, v in fs2k["codes"].items()}
    dialog = manifests.load("celeba_dialog")["labels"]
    out["celeba_dialog"] = {spelled(k): values(v) for k, v in dialog["degrees"].items()}
    return out


def number(text: str) -> float | None:
    try:
        value = float("".join(text.split()))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------- the three measurements
def evaluate_attributes(session, faces, config: EvaluateConfig) -> dict:
    tok, lay = session.tokenizer, session.layouts
    items, prompts = [], []
    for n, (meta, codes) in enumerate(faces):
        for text in meta["texts"]:
            if text["kind"] != "attributes":
                continue
            head = attribute_head(text)
            for pair in text.get("attributes") or []:
                try:
                    prompts.append(lay.to_attributes_prompt(codes, pair["key"], meta["image_id"], dataset=head))
                except UserError as e:
                    log.warning("skipped: %s", e)
                    continue
                items.append({"face": n, "dataset": text["dataset"], "key": pair["key"], "value": pair["value"]})
    if not items:
        return {}
    stops = value_ends(tok)
    greedy = Sampling(greedy=True, batch_size=config.batch_size)
    outputs = decode(session.model, prompts, TEXT, tok, greedy, stop_ids=stops, max_new=config.max_value_tokens)
    vocab = vocabularies()
    ranked = _rank(session, items, prompts, vocab, config)
    groups: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(float))
    for item, out, best in zip(items, outputs, ranked):
        g = groups[(item["dataset"], item["key"])]
        predicted = first_value(tok.decode(out["tokens"]))
        g["n"] += 1
        g["correct"] += out["tokens"] == tok.encode(item["value"])
        if best is not None:
            g["ranked_n"] += 1
            g["ranked_correct"] += best == item["value"]
        gold = number(item["value"])
        if gold is not None:
            guess = number(predicted)
            if guess is None:
                g["not_a_number"] += 1
            else:
                g["numeric_n"] += 1
                g["abs_error"] += abs(guess - gold)
    report = {}
    for (dataset, key), g in sorted(groups.items()):
        row = {"dataset": dataset, "key": key, "n": int(g["n"]), "accuracy": g["correct"] / g["n"]}
        if g["ranked_n"]:
            row |= {"ranked_n": int(g["ranked_n"]), "ranked_accuracy": g["ranked_correct"] / g["ranked_n"]}
        if g["numeric_n"] or g["not_a_number"]:
            row |= {
                "mae": g["abs_error"] / g["numeric_n"] if g["numeric_n"] else None,
                "not_a_number": int(g["not_a_number"]),
            }
        report[f"{dataset}/{key}"] = row
    return report


def _rank(session, items, prompts, vocab, config: EvaluateConfig) -> list[str | None]:
    """The likeliest candidate of each item's key vocabulary (None where the key has none or lacks the label)."""
    tok = session.tokenizer
    rows, owners = [], []
    for n, item in enumerate(items):
        candidates = vocab.get(item["dataset"], {}).get(item["key"])
        if candidates and item["value"] in candidates:
            for c in candidates:
                rows.append((prompts[n], tok.encode(c)))
                owners.append((n, c))
    scores = []
    for start in range(0, len(rows), config.batch_size):
        chunk = rows[start : start + config.batch_size]
        scores += score(session.model, [p for p, _ in chunk], [c for _, c in chunk], tok, value_ends(tok))
    best: dict[int, tuple[float, str]] = {}
    for (n, c), s in zip(owners, scores):
        if n not in best or s > best[n][0]:
            best[n] = (s, c)
    return [best[n][1] if n in best else None for n in range(len(items))]


def evaluate_captions(session, faces, config: EvaluateConfig) -> dict:
    lay, tok = session.layouts, session.tokenizer
    refs = [_references(meta) for meta, _ in faces]
    chosen = [n for n, r in enumerate(refs) if r]
    if not chosen:
        return {}
    prompts = [lay.to_caption_prompt(faces[n][1], faces[n][0]["image_id"]) for n in chosen]
    outputs = decode(session.model, prompts, TEXT, tok, Sampling(greedy=True, batch_size=config.batch_size))
    captions = {n: tok.decode(o["tokens"]) for n, o in zip(chosen, outputs)}
    groups = {}
    for dataset in sorted({d for n in chosen for d in refs[n]}):
        faces_of = [n for n in chosen if dataset in refs[n]]
        groups[dataset] = ([captions[n] for n in faces_of], [refs[n][dataset] for n in faces_of])
    missing = metrics.meteor_missing() if config.meteor else "not asked"
    meteors = {}
    if missing is None:
        try:
            meteors = metrics.meteor_groups(groups)
        finally:  # its gigabyte of Java is not kept past the evaluation (`demo --serve` goes on serving)
            metrics.close_meteor()
    report = {}
    for dataset, (hyps, references) in groups.items():
        report[dataset] = {
            "faces": len(hyps),
            "bleu4": metrics.bleu4(hyps, references),
            "rouge_l": metrics.rouge_l(hyps, references),
            "cider": metrics.cider(hyps, references),
            "meteor": meteors.get(dataset),
            "meteor_missing": missing,
            "example": {"generated": hyps[0], "reference": references[0][0]},
        }
    return report


def _references(meta: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for text in meta["texts"]:
        if text["kind"] == "caption":
            out[text["dataset"]].append(text["text"])
    return dict(out)


@torch.no_grad()
def evaluate_losses(session, faces, config: EvaluateConfig) -> dict:
    lay, model = session.layouts, session.model
    rng = random.Random(0)
    rows: list[tuple[str, object]] = []
    for meta, codes in faces:
        face = meta["image_id"]
        caption = next((t for t in meta["texts"] if t["kind"] == "caption"), None)
        attributes = next((t for t in meta["texts"] if t["kind"] == "attributes" and t.get("attributes")), None)
        builders = []
        if caption:
            builders += [
                ("caption_to_face", lay.caption_to_face, (caption["text"], codes, face)),
                ("face_to_caption", lay.face_to_caption, (codes, caption["text"], face)),
            ]
        if attributes:
            head, pairs = attribute_head(attributes), attributes["attributes"]
            builders += [
                ("attributes_to_face", lay.attributes_to_face, (head, pairs, codes, rng, face)),
                ("face_to_attributes", lay.face_to_attributes, (codes, head, pairs, rng, face)),
            ]
        for task, build, args in builders:
            try:
                rows.append((task, build(*args)))
            except UserError as e:
                log.warning("skipped %s: %s", task, e)
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    device = session.device
    for start in range(0, len(rows), config.batch_size):
        chunk = rows[start : start + config.batch_size]
        batch = {k: v.to(device) for k, v in pad_batch([s for _, s in chunk]).items()}
        losses = model.loss(batch["tokens"], batch["segments"], batch["labels"], reduction="row")
        counts = (batch["labels"] != IGNORE).sum(1)
        for (task, _), loss, count in zip(chunk, losses.tolist(), counts.tolist()):
            totals[task][0] += loss
            totals[task][1] += count
    return {
        task: {"loss": totals[task][0] / totals[task][1], "tokens": int(totals[task][1])}
        for task in TASKS
        if totals[task][1]
    }


# ---------------------------------------------------------------------- the paper's tables and the report
def paper_rows(attributes: dict, captions: dict, synthesis: dict | None = None) -> list[dict]:
    """Every row of paper_figures.json with ours beside it (None where this run cannot compute it) and its count."""
    figures = json.loads(PAPER_FIGURES.read_text(encoding="utf-8"))
    rows = []
    for spec in figures["rows"]:
        ours, count, why = _ours(spec, attributes, captions, synthesis or {}, figures["celeba_hq_datasets"])
        if ours is not None and spec["unit"] == "%":
            ours *= 100
        rows.append({**spec, "ours": ours, "count": count, "why_not": why, "source": figures["source"]})
    return rows


def _ours(spec: dict, attributes: dict, captions: dict, synthesis: dict, celeba_hq: list[str]):
    """(our figure, the sample count it rests on, why there is none)."""
    measure, dataset = spec["measure"], spec.get("dataset")
    if measure is None:
        return None, None, "a user study"
    if measure in ("fid", "is_mean"):
        if "fid" not in synthesis:
            return None, None, synthesis.get("skipped", "needs --fid")
        if dataset == "celeba_hq" and not set(synthesis["real_datasets"]) <= set(celeba_hq):
            return None, None, f"needs real faces of {' or '.join(celeba_hq)} only"
        return synthesis[measure], f"{synthesis['generated']} generated / {synthesis['real']} real", None
    if measure in ("bleu4", "rouge_l", "cider", "meteor"):
        row = captions.get(dataset, {})
        why = row.get("meteor_missing") if measure == "meteor" else None
        return row.get(measure), row.get("faces"), why or (None if row else f"no {dataset} captions")
    if spec["key"] == "*":
        chosen = [r for r in attributes.values() if r["dataset"] == dataset]
        if not chosen:
            return None, None, f"no {dataset} attributes"
        return sum(r["accuracy"] for r in chosen) / len(chosen), sum(r["n"] for r in chosen), None
    row = attributes.get(f"{dataset}/{spec['key']}", {})
    count = row.get("n")
    if measure == "mae" and row:
        count = row["n"] - row.get("not_a_number", 0)  # MAE rests on the answers that are numbers
    return row.get(measure), count, None if row else f"no {dataset} {spec['key']}"


def run_evaluation(session, shards: Path, config: EvaluateConfig, out: Path | None = None, synthesis=None) -> dict:
    """All measurements; `synthesis` (a `trainer.synthesis.SynthesisConfig`) adds FID/IS (and CLIP). With `out`,
    the report is written there, by one run at a time."""
    if out is None:
        return _run_evaluation(session, shards, config, None, synthesis)
    from common.locks import folder_lock

    with folder_lock(out, "evaluate"):
        return _run_evaluation(session, shards, config, Path(out), synthesis)


def _run_evaluation(session, shards: Path, config: EvaluateConfig, out: Path | None, synthesis) -> dict:
    bad_shards: list[str] = []
    faces = read_faces(shards, config.split, config.limit, config.skip_bad_shards, bad_shards)
    skipped = skipped_measurements(faces, config.split)
    log.info("evaluating %d %s faces", len(faces), config.split)
    for name, why in skipped.items():
        log.warning("%s: skipped, %s", name, why)
    synthesized = {}
    if synthesis is not None:
        from trainer.synthesis import evaluate_synthesis

        synthesized = evaluate_synthesis(session, faces, shards, synthesis)
    measured = {"attributes": {}, "captions": {}}
    with Progress(3 - len(skipped), "evaluate", "measurement", enabled=not config.quiet) as bar:
        for name, measure in (
            ("attributes", evaluate_attributes),
            ("captions", evaluate_captions),
            ("losses", evaluate_losses),
        ):
            if name not in skipped:
                measured[name] = measure(session, faces, config)
                bar.update(1, name)
    attributes, captions, losses = measured["attributes"], measured["captions"], measured["losses"]
    report = {
        "checkpoint": str(session.checkpoint),
        "shards": str(shards),
        "config": asdict(config),
        "faces": len(faces),
        "attributes": attributes,
        "captions": captions,
        "losses": losses,
        "skipped": skipped,
        "damaged_shards_skipped": bad_shards,
        "synthesis": synthesized,
        "paper": paper_rows(attributes, captions, synthesized),
    }
    if synthesis is not None:
        report["synthesis_config"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(synthesis).items()}
    report["table"] = format_report(report)
    if out is not None:
        from common.fileio import atomic_path, write_json

        write_json({k: v for k, v in report.items() if k != "table"}, out / REPORT_JSON)
        with atomic_path(out / REPORT_TABLE) as tmp:
            tmp.write_text(report["table"] + "\n", encoding="utf-8")
    return report


def _fmt(value, digits=2, scale=1.0) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _paper_line(r: dict) -> str:
    unit = "" if r["unit"] == "score" else f" ({r['unit']})"
    ours = _fmt(r["ours"]) if r["ours"] is not None else f"n/a ({r['why_not']})" if r["why_not"] else "n/a"
    what = f"{r['model']}: {r['task']}" if r.get("model") else r["task"]
    return (
        f"| {r['table']} | {what} | {r['metric']}{unit} | {ours} | {r['count'] if r['count'] is not None else ''} "
        f"| {_fmt(r['paper'], 1)} |"
    )


def format_report(report: dict) -> str:
    from trainer.synthesis import format_synthesis

    lines = [
        f"# Evaluation of {report['checkpoint']} on {report['faces']} {report['config']['split']} faces",
        "",
        "## The paper's tasks",
        "",
        "| table | task | metric | ours | n | paper |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_paper_line(r) for r in report["paper"]]
    skipped = [f"- {name}: skipped, {why}" for name, why in report.get("skipped", {}).items()]
    skipped += [f"- damaged shard left out (--skip-bad-shards): {e}" for e in report.get("damaged_shards_skipped", [])]
    if skipped:
        lines += ["", "## Not measured", ""] + skipped
    if report["paper"]:
        lines.append(
            f"\nPaper: {report['paper'][0]['source']}. Table 5 rows are models trained another way: "
            "ours is this checkpoint's figure."
        )
    lines += [
        "",
        "## Attributes (greedy; ranked = candidates by log-likelihood)",
        "",
        "| dataset | key | n | accuracy % | ranked % | MAE | not a number |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["attributes"].values():
        lines.append(
            f"| {r['dataset']} | {r['key']} | {r['n']} | {_fmt(r['accuracy'], 1, 100)} | "
            f"{_fmt(r.get('ranked_accuracy'), 1, 100)} | {_fmt(r.get('mae'))} | {r.get('not_a_number', '')} |"
        )
    lines += [
        "",
        "## Captions (greedy)",
        "",
        "| dataset | faces | BLEU-4 % | ROUGE-L % | METEOR % | CIDEr |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, r in report["captions"].items():
        meteor = _fmt(r["meteor"], 2, 100) if r.get("meteor") is not None else f"n/a ({r.get('meteor_missing')})"
        lines.append(
            f"| {dataset} | {r['faces']} | {_fmt(r['bleu4'], 2, 100)} | {_fmt(r['rouge_l'], 2, 100)} | "
            f"{meteor} | {_fmt(r['cider'], 3)} |"
        )
    lines += format_synthesis(report.get("synthesis") or {})
    lines += [
        "",
        "## Loss per task (mean cross-entropy per target token)",
        "",
        "| task | tokens | loss |",
        "|---|---|---|",
    ]
    for task, r in report["losses"].items():
        lines.append(f"| {task} | {r['tokens']} | {r['loss']:.4f} |")
    return "\n".join(lines)
