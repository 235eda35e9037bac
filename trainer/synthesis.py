"""Table 2 of the paper: FID and IS of faces generated from a split's captions, against that split's real faces.

    python cli.py evaluate --checkpoint runs/r1 --shards shards/ --split val --fid \
        --inception-weights pt_inception-2015-12-05-6726825d.pth [--fid-samples 1000] [--clip clip-dir/]

Texts: the first caption of each face of the split, in shard order, taken again from the start (with new
samples) when `--fid-samples` asks for more faces than there are captions. Real faces: every face of the split
(up to `--limit`), read from the corpus that `SHARDS/index.json` names (or `--corpus`) and cropped and resized
exactly as tokenize-images does (`facetokens.images.prepare_face`). A real face that cannot be read is
counted and reported, never dropped silently. With `--clip`, the mean CLIP score of each generated face
against its own text (an automatic stand-in for the paper's user-study consistency).

FID from 1,000 faces is biased upward against FID from 50,000 (the estimate shrinks with the sample count):
compare figures only at equal counts, as the report says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from common.progress import Progress
from corpus import layout
from trainer import fid
from trainer.generate import IMAGE, Request, Sampling, build_prompt, decode
from trainer.text import image_codes

log = logging.getLogger(__name__)

BIAS_NOTE = (
    "FID is biased upward at small sample counts (1,000 faces read higher than 50,000); "
    "compare only figures measured on the same counts"
)


@dataclass(frozen=True)
class SynthesisConfig:
    samples: int = 1000  # generated faces (the paper's 1,000)
    inception_weights: Path | None = None
    clip: Path | None = None
    corpus: Path | None = None  # default: the corpus SHARDS/index.json names
    seed: int = 0
    batch_size: int = 64  # faces generated together
    quiet: bool = False  # no progress lines

    def __post_init__(self):
        if self.samples < 2:
            raise UserError(f"--fid-samples {self.samples}: FID needs at least 2 generated faces (the paper: 1,000)")
        if self.samples > 50_000:
            raise UserError(f"--fid-samples {self.samples}: at most 50,000 (the usual FID protocol's size)")
        fid.require_weights(self.inception_weights)  # refused before any model work
        if self.clip is not None:
            from trainer.clip import require_folder

            require_folder(self.clip)


def caption_texts(faces: list[tuple[dict, list[int]]], samples: int) -> tuple[list[str], int]:
    """`samples` texts: the faces' first captions, repeated from the start as needed; and how many distinct."""
    captions = []
    for meta, _ in faces:
        first = next((t["text"] for t in meta["texts"] if t["kind"] == "caption"), None)
        if first:
            captions.append(first)
    if not captions:
        return [], 0
    return [captions[i % len(captions)] for i in range(samples)], len(captions)


def real_features(
    inception, metas: list[dict], shards: Path, config: SynthesisConfig, device
) -> tuple[fid.Features, dict[str, int]]:
    """Inception features of the split's real faces, prepared as tokenize-images does; unreadable ones counted."""
    from facetokens.images import SIZE, try_prepare_face
    from facetokens.preview import corpus_of, find_originals

    corpus = config.corpus or corpus_of(Path(shards))
    if corpus is None or not layout.images_file(corpus).is_file():
        raise UserError(
            f"--fid needs the real faces: the corpus of {shards} ({corpus or 'not named in index.json'}) "
            f"is not at hand (no {layout.IMAGES_FILE}); pass --corpus DIR (the folder from build-corpus)"
        )
    originals = find_originals(metas, Path(corpus))
    parts, batch, skipped = [], [], {}
    with Progress(len(metas), "real faces", "face", enabled=not config.quiet) as bar:
        for n, meta in enumerate(metas):
            found = originals.get(meta["image_id"])
            array, reject = try_prepare_face(found[0], found[1], SIZE) if found else (None, None)
            if array is None:
                reason = reject.reason if reject else "not_in_corpus"
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                batch.append(array)
            if len(batch) == fid.BATCH or (n == len(metas) - 1 and batch):
                parts.append(fid.extract(inception, batch, device))
                bar.update(len(batch))
                batch = []
    if skipped:
        log.warning("real faces left out of FID/IS: %s", skipped)
    return (fid.concat(parts) if parts else fid.extract(inception, [], device)), skipped


def generate_faces(session, texts: list[str], config: SynthesisConfig, sampling: Sampling, on_batch) -> None:
    """Generate a face per text, a batch at a time; `on_batch(texts, arrays)` consumes each batch."""
    generator = torch.Generator(session.device).manual_seed(config.seed)
    with Progress(len(texts), "generate faces", "face", enabled=not config.quiet) as bar:
        for start in range(0, len(texts), config.batch_size):
            chunk = texts[start : start + config.batch_size]
            prompts = [
                build_prompt(session, Request("to_image", text=t), None, f"caption {start + n + 1}")
                for n, t in enumerate(chunk)
            ]
            outputs = decode(session.model, prompts, IMAGE, session.tokenizer, sampling, generator)
            codes = [image_codes(o["tokens"], session.config.text_vocab_size) for o in outputs]
            on_batch(chunk, session.decode_faces(codes))
            bar.update(len(chunk))


def evaluate_synthesis(session, faces: list[tuple[dict, list[int]]], shards: Path, config: SynthesisConfig) -> dict:
    """FID, IS and (with a CLIP) the mean CLIP score; every figure with its sample counts."""
    session.need_vqgan("--fid")
    inception = fid.load_inception(config.inception_weights, session.device)
    scorer = None
    if config.clip is not None:
        from trainer.clip import ClipScorer

        scorer = ClipScorer.load(config.clip, str(session.device))
    texts, distinct = caption_texts(faces, config.samples)
    if not texts:
        return {"skipped": "no face of the split has a caption: nothing to generate faces from"}
    reals, skipped = real_features(inception, [meta for meta, _ in faces], shards, config, session.device)
    if len(reals) < 2:
        raise UserError(f"FID needs at least 2 real faces; {len(reals)} of {len(faces)} could be read ({skipped})")
    fake_parts, clip_scores, truncated = [], [], False
    sampling = Sampling(seed=config.seed, batch_size=config.batch_size)

    def consume(chunk: list[str], arrays: list[np.ndarray]) -> None:
        nonlocal truncated
        fake_parts.append(fid.extract(inception, arrays, session.device))
        if scorer is not None:
            from PIL import Image

            scores = scorer.pairs(chunk, [Image.fromarray(a) for a in arrays])
            clip_scores.extend(scores.scores)
            truncated |= scores.truncated

    generate_faces(session, texts, config, sampling, consume)
    fake = fid.concat(fake_parts)
    is_mean, is_std = fid.inception_score(fake, config.seed)
    report = {
        "fid": fid.frechet_distance(reals, fake),
        "is_mean": is_mean,
        "is_std": is_std,
        "generated": len(fake),
        "texts": distinct,
        "real": len(reals),
        "real_skipped": skipped,
        "real_datasets": sorted({meta["dataset"] for meta, _ in faces}),
        "note": BIAS_NOTE,
    }
    if scorer is not None:
        report |= {
            "clip_score": float(np.mean(clip_scores)),
            "clip_faces": len(clip_scores),
            "clip_truncated": truncated,
        }
    return report


def format_synthesis(report: dict) -> list[str]:
    """Markdown lines for the evaluation report."""
    if not report:
        return []
    lines = ["", "## Text-guided synthesis (Table 2)", ""]
    if "skipped" in report:
        return lines + [f"skipped: {report['skipped']}"]
    skipped = (
        f"; {sum(report['real_skipped'].values())} unreadable: {report['real_skipped']}"
        if report["real_skipped"]
        else ""
    )
    lines += [
        "| metric | value | generated faces | real faces |",
        "|---|---|---|---|",
        f"| FID | {report['fid']:.2f} | {report['generated']} | {report['real']} |",
        f"| IS | {report['is_mean']:.3f} ± {report['is_std']:.3f} | {report['generated']} | – |",
    ]
    if "clip_score" in report:
        cut = " (some texts cut at CLIP's 77 tokens)" if report["clip_truncated"] else ""
        lines.append(
            f"| CLIP score (100 × cosine, face vs its text){cut} | {report['clip_score']:.2f} | "
            f"{report['clip_faces']} | – |"
        )
    lines += ["", f"Generated from {report['texts']} distinct captions{skipped}. {report['note']}."]
    return lines
