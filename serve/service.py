"""What the page asks of the model, without the page: one request at a time through `trainer.generate.run_requests`.

    service = Service(load_session(run, vqgan_config=yaml, vqgan_ckpt=ckpt), workdir)
    answer = service.faces("a young woman with curly red hair, smiling", service.sampling(8, 70, 0.0, 1.0, 0))
    answer.result          # the results.jsonl line `generate` writes for the same request and settings
    service.bundle(answer)  # a zip of results.jsonl and the PNGs, for the page's Download button

Every request gets its own folder under `workdir` (the server's temporary folder) and runs through
`run_requests` exactly as `generate` runs a one-line requests file: the same session, batching and
key-value cache. Only the newest `KEEP_ANSWERS` folders are kept. With a CLIP scorer, faces and captions
are also ranked by CLIP similarity to their condition, by `run_requests` itself (as `generate --clip`, so
results.jsonl is that command's line).
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from common.fileio import atomic_path, write_json
from trainer.generate import Request, Sampling, run_requests

log = logging.getLogger(__name__)

MAX_SAMPLES = 16
KEEP_ANSWERS = 32  # request folders kept in the temporary folder (the oldest are removed)
BUNDLE = "talk2face-faces.zip"
CLIP_FILE = "clip.json"


@dataclass
class Answer:
    result: dict  # the results.jsonl line
    folder: Path  # where run_requests wrote it
    clip: list[float] | None = None  # CLIP score of each sample, in sample order
    order: list[int] | None = None  # samples best first (CLIP), else None (as generated)
    clip_truncated: bool = False  # the text was cut to CLIP's 77 tokens

    def ranked(self) -> list[int]:
        return self.order if self.order is not None else list(range(len(self.result["samples"])))


def whole_number(value, name: str, low: int, high: int | None = None) -> int:
    """A setting from the page (a float from a slider or number box) as an int in [low, high], else one UserError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number.is_integer() or number < low or (high is not None and number > high):
        expected = f"a whole number from {low} to {high}" if high is not None else f"a whole number, {low} or more"
        raise UserError(f"{name} {value!r}: expected {expected}")
    return int(number)


def real_number(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} {value!r}: expected a number") from None
    if not math.isfinite(number):
        raise UserError(f"{name} {value!r}: expected a finite number")
    return number


class Service:
    """The loaded model and the temporary folder; one method per tab of the page."""

    def __init__(self, session, workdir: Path, clip=None):
        from trainer.evaluate import vocabularies

        session.need_vqgan("serve")
        self.session, self.workdir, self.clip = session, Path(workdir), clip
        self.vocabularies = vocabularies()
        self._numbers = itertools.count(1)

    @staticmethod
    def sampling(samples, top_k, top_p, temperature, seed) -> Sampling:
        """The page's settings as generate's Sampling; an out-of-range one is one UserError."""
        return Sampling(
            samples=whole_number(samples, "samples", 1, MAX_SAMPLES),
            top_k=whole_number(top_k, "top-k", 0),
            top_p=real_number(top_p, "top-p"),
            temperature=real_number(temperature, "temperature"),
            seed=whole_number(seed, "seed", -(2**63)),
        )

    def faces(self, text: str, sampling: Sampling) -> Answer:
        text = " ".join((text or "").split())
        if not text:
            raise UserError("text: type a caption or attributes to draw faces from")
        return self._run(Request("to_image", text=text), sampling)

    def caption(self, face: str | Path | None, sampling: Sampling) -> Answer:
        return self._run(Request("to_caption", image=self._face(face)), sampling)

    def attributes(
        self, face: str | Path | None, dataset: str | None, key: str | None, candidates: str | None
    ) -> Answer:
        if not key or not str(key).strip():
            raise UserError("key: choose an attribute key")
        values = [c.strip() for c in (candidates or "").split(",") if c.strip()] or None
        request = Request(
            "to_attributes",
            image=self._face(face),
            attribute=str(key).strip(),
            dataset=(dataset or None),
            candidates=values,
        )
        return self._run(request, Sampling(samples=1, greedy=True))

    def keys(self, dataset: str | None) -> list[str]:
        return list(self.vocabularies.get(dataset or "", {}))

    def candidates(self, dataset: str | None, key: str | None) -> list[str]:
        return list(self.vocabularies.get(dataset or "", {}).get(key or "", []))

    @staticmethod
    def seen_face(face: str | Path):
        """The face as the model reads it (cropped and resized as tokenize-images does), a PIL image."""
        from PIL import Image

        from facetokens.images import SIZE, BadImage, prepare_face

        try:
            return Image.fromarray(prepare_face(face, None, SIZE))
        except BadImage as e:
            detail = e.detail.removeprefix(f"{face}: ")
            raise UserError(f"face {Path(face).name}: {e.reason.replace('_', ' ')} ({detail})") from None

    def bundle(self, answer: Answer) -> Path:
        """A zip of the answer's results.jsonl and images (and CLIP scores where ranked), in its folder."""
        path = answer.folder / BUNDLE
        if answer.clip is not None:
            write_json(
                {"scores": answer.clip, "ranked": answer.order, "truncated": answer.clip_truncated},
                answer.folder / CLIP_FILE,
            )
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(answer.folder.rglob("*")):
                if file.is_file() and file.suffix in (".jsonl", ".png", ".json"):
                    archive.write(file, file.relative_to(answer.folder).as_posix())
        return path

    def _face(self, face: str | Path | None) -> str:
        if not face:
            raise UserError("face: upload a face or pick an example")
        self.seen_face(face)  # the checks tokenize-images makes, with the upload's own name in the message
        return str(face)

    def _run(self, request: Request, sampling: Sampling) -> Answer:
        folder = self.workdir / f"request-{next(self._numbers):06d}"
        results = run_requests(self.session, [request], sampling, folder, clip=self.clip)
        self._prune()
        answer = Answer(results[0], folder)
        samples = answer.result["samples"]
        if samples and all("clip_score" in s for s in samples):  # ranked by CLIP (faces and captions)
            answer.clip = [s["clip_score"] for s in samples]
            answer.order = sorted(range(len(samples)), key=lambda k: samples[k]["clip_rank"])
            answer.clip_truncated = bool(answer.result.get("clip_truncated"))
        return answer

    def _prune(self) -> None:
        folders = sorted(self.workdir.glob("request-*"))
        for old in folders[:-KEEP_ANSWERS]:
            shutil.rmtree(old, ignore_errors=True)


def load_clip(folder: Path | None, device: str):
    """`--clip DIR` as a scorer (trainer.clip), or None without it."""
    if folder is None:
        return None
    try:
        from trainer.clip import ClipScorer
    except ImportError:
        raise UserError("--clip: this install has no trainer/clip.py (CLIP ranking); run without --clip") from None
    return ClipScorer.load(folder, device=device)


def describe(answer: Answer) -> str:
    """One line under the results: how many, the prompt's length, and whether anything was cut."""
    result = answer.result
    notes = [f"{len(result['samples'])} sample(s)", f"prompt {len(result['prompt_tokens'])} tokens"]
    if result.get("prompt_truncated"):
        notes.append("the text was cut to fit the model's prompt")
    if answer.clip is not None:
        notes.append("ranked by CLIP" + (" (the text was cut to CLIP's 77 tokens)" if answer.clip_truncated else ""))
    return "; ".join(notes)
