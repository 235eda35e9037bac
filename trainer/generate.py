"""Generation: faces from text, captions and attribute values from faces, with a key-value cache.

    session = load_session("talk2face.bin", vqgan_config=yaml, vqgan_ckpt=ckpt)        # trainer.inference
    results = run_requests(session, [Request("to_image", text="This man has black hair.")], Sampling(), out)

Decoding (`decode`): the prompts of a batch are right-padded and run once through the model into the
cache (`prefill`); then every step feeds one token per row. Rows are all samples of all requests of one
target kind, sorted by prompt length and cut into batches of `Sampling.batch_size`.

Constraints: an image target is exactly `image_tokens` tokens drawn only from the image ids; a text
target draws only text ids (never [PAD] or [CLS]) and stops at [SEP] and nowhere else (evaluation may
also stop at `;`, the end of the first attribute pair). Sampling: temperature, then top-k keeping every
token tied with the k-th logit, then top-p (nucleus; 0 = off), as the released script does; greedy
takes the arg-max. The released script instead samples over all 31,546 ids for `seq_length - prefix`
steps and cuts text at any id whose decimal digits contain "102".
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from common.errors import UserError
from trainer.model import PAD_SEGMENT, PREFIX_SEGMENT, TARGET_SEGMENT, Talk2Face
from trainer.sequences import IGNORE, PROMPTS, Sequence

log = logging.getLogger(__name__)

IMAGE, TEXT = "image", "text"
TARGETS = {"to_image": IMAGE, "to_caption": TEXT, "to_attributes": TEXT}
RESULTS_FILE = "results.jsonl"
IMAGES_DIR = "images"
# Every generated row's tokens are held until results.jsonl is written (a to_image row: 256 ids, ~9 KB as Python
# ints), so one run generates at most this many rows (requests x samples); images are decoded, written and
# CLIP-scored a few at a time. 20,000 rows hold ~200 MB.
MAX_ROWS = 20_000


@dataclass(frozen=True)
class Sampling:
    samples: int = 10  # per request (attributes: always 1, greedy)
    top_k: int = 70  # 0 = off; ties at the k-th logit are kept (the released filter)
    top_p: float = 0.0  # nucleus sampling; 0 = off (the released default)
    temperature: float = 1.0
    seed: int = 0
    greedy: bool = False
    batch_size: int = 100  # rows (request x sample) decoded together

    def __post_init__(self):
        problems = []
        if self.samples < 1:
            problems.append(f"--samples {self.samples}: need at least 1")
        if self.top_k < 0:
            problems.append(f"--top-k {self.top_k}: need 0 (off) or more")
        if math.isfinite(self.top_p) and not 0.0 <= self.top_p <= 1.0:
            problems.append(f"--top-p {self.top_p}: need a value in [0, 1] (0 = off)")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            problems.append(f"--temperature {self.temperature}: need a positive finite value")
        if not math.isfinite(self.top_p):
            problems.append(f"--top-p {self.top_p}: need a value in [0, 1] (0 = off)")
        if self.samples > MAX_ROWS:
            problems.append(
                f"--samples {self.samples}: at most {MAX_ROWS:,} in one run (run again with another --seed for more)"
            )
        if self.batch_size < 1:
            problems.append(f"--batch-size {self.batch_size}: need at least 1")
        if problems:
            raise UserError("; ".join(problems))


# ---------------------------------------------------------------------- token choice
def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Logits outside the top-k (ties with the k-th kept) and the top-p nucleus set to -inf. [rows, vocab]."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True, dim=-1)
        remove = ordered.softmax(-1).cumsum(-1) > top_p
        remove[..., 1:] = remove[..., :-1].clone()  # keep the token that crosses top_p
        remove[..., 0] = False
        logits = logits.masked_fill(torch.zeros_like(remove).scatter(-1, order, remove), float("-inf"))
    return logits


def choose(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    logits = logits.float()
    if sampling.greedy:
        return logits.argmax(-1)
    logits = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def allowed_ids(model: Talk2Face, target: str, tokenizer) -> torch.Tensor:
    """[vocab] bool: the ids a target may contain."""
    config = model.config
    allowed = torch.zeros(config.vocab_size, dtype=torch.bool)
    if target == IMAGE:
        allowed[config.text_vocab_size :] = True
    else:
        allowed[: config.text_vocab_size] = True
        allowed[[tokenizer.pad_id, tokenizer.cls_id]] = False
    return allowed


def allowed_columns(allowed: torch.Tensor) -> slice:
    """The vocabulary columns from the first to the last allowed id (an image target: 1,024 of 31,546)."""
    ids = allowed.nonzero()[:, 0]
    return slice(int(ids[0]), int(ids[-1]) + 1) if len(ids) else slice(0, 0)


# ---------------------------------------------------------------------- decoding
class _Cached:
    """Prefill once, then one position per step; logits only for the span of ids the target may hold.

    The final LayerNorm and the output layer run on each row's last position only, and only over the
    columns from the first to the last allowed id (an image target: its 1,024 of 31,546); the rest of the
    preallocated [rows, vocab] logits stay -inf, which the allowed-id mask would have set anyway.
    """

    def __init__(self, model: Talk2Face, tokens, segments, lengths, steps: int, allowed: torch.Tensor):
        self.model = model
        self.cache = model.new_cache(len(tokens), tokens.shape[1] + steps)
        self.columns = allowed_columns(allowed)
        self.logits = torch.full(
            (len(tokens), model.config.vocab_size),
            float("-inf"),
            device=tokens.device,
            dtype=model.target.lm.output_layer.weight.dtype,
        )
        self.segment = torch.full((len(tokens), 1), TARGET_SEGMENT, device=tokens.device)
        hidden = model.hidden(tokens, segments, cache=self.cache)
        self.first = self._logits(hidden[torch.arange(len(tokens)), lengths - 1])

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        self.logits[:, self.columns] = self.model.head(hidden, self.columns)
        return self.logits

    def next(self, new: torch.Tensor) -> torch.Tensor:
        return self._logits(self.model.hidden(new[:, None], self.segment, cache=self.cache)[:, -1])


class _Uncached:
    """The released way: the whole row recomputed for every new token (rows of equal prompt length)."""

    def __init__(self, model: Talk2Face, tokens, segments, lengths, steps: int, allowed: torch.Tensor):
        if not bool((lengths == tokens.shape[1]).all()):
            raise ValueError("uncached decoding needs prompts of equal length")
        self.model, self.tokens, self.segments = model, tokens, segments
        self.first = model(tokens, segments)[:, -1]

    def next(self, new: torch.Tensor) -> torch.Tensor:
        self.tokens = torch.cat([self.tokens, new[:, None]], 1)
        self.segments = torch.cat([self.segments, torch.full_like(new[:, None], TARGET_SEGMENT)], 1)
        return self.model(self.tokens, self.segments)[:, -1]


@torch.no_grad()
def decode(
    model: Talk2Face,
    prompts: list[Sequence],
    target: str,
    tokenizer,
    sampling: Sampling,
    generator: torch.Generator | None = None,
    stop_ids: tuple[int, ...] | None = None,
    max_new: int | None = None,
    use_cache: bool = True,
    done=None,
) -> list[dict]:
    """One generated target per prompt: {"tokens": ids (stop token excluded), "stopped": bool}, in prompt order.

    `done(n)`, when given, is called after each batch with its number of rows (a progress bar's update)."""
    config = model.config
    if target == IMAGE:
        stop_ids, limits = (), [config.image_tokens] * len(prompts)
    else:
        stop_ids = (tokenizer.sep_id,) if stop_ids is None else stop_ids
        limits = [config.seq_length - len(p.tokens) for p in prompts]
        if max_new is not None:
            limits = [min(n, max_new) for n in limits]
        if min(limits, default=1) < 1:
            raise UserError(
                f"a prompt of {max(len(p.tokens) for p in prompts)} tokens leaves no room for text "
                f"in seq_length {config.seq_length}"
            )
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].tokens))
    results: list[dict | None] = [None] * len(prompts)
    for start in range(0, len(order), sampling.batch_size):
        for chunk in _groups(order[start : start + sampling.batch_size], prompts, use_cache):
            rows = [prompts[i] for i in chunk]
            out = _decode_rows(
                model,
                rows,
                [limits[i] for i in chunk],
                target,
                tokenizer,
                sampling,
                generator,
                stop_ids,
                _Cached if use_cache else _Uncached,
            )
            for i, r in zip(chunk, out):
                results[i] = r
            if done is not None:
                done(len(chunk))
    return results


def _groups(chunk: list[int], prompts: list[Sequence], use_cache: bool) -> list[list[int]]:
    if use_cache:
        return [chunk]
    by_length: dict[int, list[int]] = {}
    for i in chunk:
        by_length.setdefault(len(prompts[i].tokens), []).append(i)
    return list(by_length.values())


def _decode_rows(
    model, rows: list[Sequence], limits: list[int], target, tokenizer, sampling, generator, stop_ids, stepper
) -> list[dict]:
    device = model.target.lm.output_layer.weight.device
    lengths = torch.tensor([len(r.tokens) for r in rows], device=device)
    width = int(lengths.max())
    tokens = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    segments = torch.full_like(tokens, PAD_SEGMENT)
    for i, r in enumerate(rows):
        tokens[i, : len(r.tokens)] = torch.tensor(r.tokens)
        segments[i, : len(r.tokens)] = torch.tensor(r.segments)
    steps = max(limits)
    allowed = allowed_ids(model, target, tokenizer).to(device)
    stops = torch.tensor(stop_ids, dtype=torch.long, device=device)
    limit = torch.tensor(limits, device=device)
    step_fn = stepper(model, tokens, segments, lengths, steps, allowed)
    blocked = ~allowed
    logits = step_fn.first
    out = torch.zeros(len(rows), steps, dtype=torch.long, device=device)
    stopped = torch.zeros(len(rows), dtype=torch.bool, device=device)
    done = torch.zeros_like(stopped)
    length = torch.zeros(len(rows), dtype=torch.long, device=device)
    for step in range(steps):
        new = choose(logits.masked_fill(blocked, float("-inf")), sampling, generator)
        new = torch.where(done, torch.full_like(new, tokenizer.sep_id), new)
        out[:, step] = new
        hit = ~done & torch.isin(new, stops)
        stopped |= hit
        length += (~done & ~hit).long()
        done |= hit | (length >= limit)
        if bool(done.all()):
            break
        logits = step_fn.next(new)
    return [{"tokens": out[i, : int(length[i])].tolist(), "stopped": bool(stopped[i])} for i in range(len(rows))]


@torch.no_grad()
def score(
    model: Talk2Face, prompts: list[Sequence], continuations: list[list[int]], tokenizer, end_ids: tuple[int, ...] = ()
) -> list[float]:
    """Log-likelihood of each continuation after its prompt, over the text ids (as constrained decoding sees them).

    With `end_ids`, the value must also end there: the log of the summed probability of those ids after it
    (an attribute value ends at `;` before the next pair or at `[SEP]` after the last, as greedy decoding stops).
    """
    device = model.target.lm.output_layer.weight.device
    rows = [p.tokens + c for p, c in zip(prompts, continuations)]
    width = max(map(len, rows))
    tokens = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    segments = torch.full_like(tokens, PAD_SEGMENT)
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        tokens[i, : len(rows[i])] = torch.tensor(rows[i])
        segments[i, : len(rows[i])] = torch.tensor(p.segments + [TARGET_SEGMENT] * len(c))
    # only the positions that predict a continuation token (and its end) go through the output layer, and
    # only over the text ids' columns: not the [rows, width, vocab] logits of the whole batch
    spans = [(len(p.tokens) - 1, len(c) + bool(end_ids)) for p, c in zip(prompts, continuations)]
    row_of = torch.tensor([i for i, (_, n) in enumerate(spans) for _ in range(n)], dtype=torch.long, device=device)
    at = torch.tensor([first + k for first, n in spans for k in range(n)], dtype=torch.long, device=device)
    allowed = allowed_ids(model, TEXT, tokenizer).to(device)
    columns = allowed_columns(allowed)
    hidden = model.hidden(tokens, segments)[row_of, at]
    logits = model.head(hidden, columns).float().masked_fill(~allowed[columns], float("-inf")).log_softmax(-1)
    totals, start = [], 0
    for c, (_, n) in zip(continuations, spans):
        total = _log_probs(logits[start : start + len(c)], c, columns).sum()
        if end_ids:
            ends = _log_probs(logits[start + len(c)].expand(len(end_ids), -1), end_ids, columns)
            total = total + ends.logsumexp(0)
        totals.append(float(total))
        start += n
    return totals


def _log_probs(logits: torch.Tensor, ids, columns: slice) -> torch.Tensor:
    """logits[k, ids[k]] for logits over `columns` only; -inf for an id outside them (a text target never holds it)."""
    index = torch.tensor(ids, dtype=torch.long, device=logits.device) - columns.start
    inside = (index >= 0) & (index < logits.shape[1])
    picked = logits.gather(1, index.clamp(0, max(logits.shape[1] - 1, 0))[:, None])[:, 0]
    return picked.masked_fill(~inside, float("-inf"))


def value_ends(tokenizer) -> tuple[int, ...]:
    """Where an attribute value ends: `;` before the next pair, `[SEP]` after the last."""
    return (tokenizer.sep_id, *tokenizer.encode(";"))


# ---------------------------------------------------------------------- requests
@dataclass
class Request:
    prompt: str  # to_image | to_caption | to_attributes
    text: str | None = None  # to_image: the caption or attribute text
    image: str | None = None  # to_caption / to_attributes: the face's file
    attribute: str | None = None  # to_attributes: the key, e.g. "gender"
    dataset: str | None = None  # to_attributes: an optional dataset name before the key ("celeba gender:")
    candidates: list[str] | None = None  # to_attributes: values to rank by log-likelihood
    id: str | None = None  # the caller's name for the request, copied to the results
    keep: int | None = None  # with a CLIP: keep the best `keep` samples (default: --keep)

    def check(self, where: str) -> None:
        if self.prompt not in PROMPTS:
            raise UserError(f"{where}: prompt {self.prompt!r} is not one of {', '.join(PROMPTS)}")
        needs = {"to_image": ("text",), "to_caption": ("image",), "to_attributes": ("image", "attribute")}[self.prompt]
        missing = [f"--{n}" for n in needs if not getattr(self, n)]
        if missing:
            raise UserError(f"{where}: {self.prompt} needs {' and '.join(missing)}")
        if self.candidates is not None and self.prompt != "to_attributes":
            raise UserError(f"{where}: candidates only apply to to_attributes")
        if self.keep is not None and (isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1):
            raise UserError(f"{where}: keep {self.keep!r}: expected a whole number of at least 1")
        if self.keep is not None and self.prompt == "to_attributes":
            raise UserError(f"{where}: keep applies to to_image and to_caption (to_attributes is one greedy value)")
        if self.image and not Path(self.image).is_file():
            raise UserError(f"{where}: cannot read the face {self.image} (no such file)")


def read_requests(path: Path) -> list[Request]:
    """One JSON object a line with Request's fields; blank lines skipped. Errors name the line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UserError(f"--requests {path}: cannot read ({e.strerror})") from None
    requests = []
    fields = set(Request.__dataclass_fields__)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            values = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(values, dict) or set(values) - fields:
            unknown = sorted(set(values) - fields) if isinstance(values, dict) else []
            raise UserError(
                f"{where}: expected an object with some of {', '.join(sorted(fields))}"
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
            )
        request = Request(**_request_values(values, where))
        request.check(where)
        requests.append(request)
    if not requests:
        raise UserError(f"--requests {path}: no requests in the file")
    return requests


def _request_values(values: dict, where: str) -> dict:
    """A requests line's fields checked for type: text fields text, candidates a list of text or one
    comma-separated text, keep a whole number; `prompt` present."""
    if "prompt" not in values:
        raise UserError(f"{where}: no prompt (expected one of {', '.join(PROMPTS)})")
    candidates = values.get("candidates")
    if isinstance(candidates, str):
        values["candidates"] = [c.strip() for c in candidates.split(",") if c.strip()]
    elif candidates is not None and not (isinstance(candidates, list) and all(isinstance(c, str) for c in candidates)):
        raise UserError(
            f"{where}: candidates must be a list of texts or one comma-separated text, "
            f"not {type(candidates).__name__} {json.dumps(candidates)[:60]}"
        )
    wrong = [
        k for k, v in values.items() if v is not None and k not in ("candidates", "keep") and not isinstance(v, str)
    ]
    if wrong:
        raise UserError(f"{where}: {', '.join(wrong)} must be text")
    return values


def build_prompt(session, request: Request, codes: list[int] | None, where: str) -> Sequence:
    layouts = session.layouts
    if request.prompt == "to_image":
        if session.prefix_cut is None:
            return layouts.to_image_prompt(request.text, where)
        # the released layout: the whole row `[CLS] to image [SEP] <text> [SEP]`, cut at 64 tokens (maybe its [SEP])
        tok, config = session.tokenizer, session.config
        row = [
            tok.cls_id,
            *layouts.prompt_ids["to_image"],
            tok.sep_id,
            *layouts.text_ids(request.text, where),
            tok.sep_id,
        ]
        cut = min(session.prefix_cut, config.seq_length - config.image_tokens)
        return Sequence(
            row[:cut], [PREFIX_SEGMENT] * len(row[:cut]), [IGNORE] * len(row[:cut]), truncated=len(row) > cut
        )
    if request.prompt == "to_caption":
        return layouts.to_caption_prompt(codes, where)
    return layouts.to_attributes_prompt(codes, request.attribute, where, dataset=request.dataset)


def first_value(text: str) -> str:
    """The value of the first `key: value` pair a model wrote (the text before any `;`)."""
    return text.split(";")[0].strip()


def check_plan(requests: list[Request], sampling: Sampling, keep: int | None = None, clip: bool = False) -> int:
    """Everything about the requests that can be refused before any model work; the rows to generate."""
    rows = 0
    for n, r in enumerate(requests):
        where = f"request {n + 1}"
        r.check(where)
        count = 1 if sampling.greedy or r.prompt == "to_attributes" else sampling.samples
        rows += count
        wanted = r.keep if r.keep is not None else keep if r.prompt != "to_attributes" else None
        if wanted is not None and not clip:
            raise UserError(f"{where}: keep {wanted} needs --clip DIR (the samples are ranked by CLIP)")
        if wanted is not None and wanted > count:
            raise UserError(f"{where}: keep {wanted} is more than the {count} sample(s) generated (--samples)")
    if rows > MAX_ROWS:
        raise UserError(
            f"{len(requests)} request(s) x their samples = {rows:,} rows: at most {MAX_ROWS:,} in one run "
            "(split the requests or lower --samples)"
        )
    return rows


def run_requests(
    session,
    requests: list[Request],
    sampling: Sampling,
    out: Path,
    clip=None,
    keep: int | None = None,
    quiet: bool = False,
) -> list[dict]:
    """Generate for every request; images as PNG under out/images/, every result in out/results.jsonl.

    With `clip` (a `trainer.clip.ClipScorer`), each to_image / to_caption request's samples are scored against its
    condition and the best `keep` (the request's own `keep`, else this one, else all) are marked `kept`.
    """
    from common.locks import folder_lock

    with folder_lock(out, "generate"):  # one writer: two runs would mix their images and results
        return _run_requests(session, requests, sampling, Path(out), clip, keep, quiet)


def _run_requests(session, requests, sampling, out: Path, clip, keep, quiet) -> list[dict]:
    from common.fileio import write_jsonl
    from common.progress import Progress

    rows = check_plan(requests, sampling, keep, clip is not None)
    faces = sorted({r.image for r in requests if r.image})
    codes_of = dict(zip(faces, session.encode_faces(faces))) if faces else {}
    if any(r.prompt == "to_image" for r in requests):
        session.need_vqgan("to_image")
    prompts = [build_prompt(session, r, codes_of.get(r.image), f"request {n + 1}") for n, r in enumerate(requests)]
    generator = torch.Generator(session.device).manual_seed(sampling.seed)
    results = [_result_head(r, p) for r, p in zip(requests, prompts)]
    with Progress(rows, "generate", "sample", enabled=not quiet) as bar:
        for target in (IMAGE, TEXT):
            _generate_target(session, requests, prompts, results, target, sampling, generator, bar)
    _finish(session, requests, prompts, results, out, clip, keep)
    write_jsonl(results, out / RESULTS_FILE)
    return results


def _generate_target(session, requests, prompts, results, target, sampling, generator, bar) -> None:
    rows, owners = [], []
    for n, request in enumerate(requests):
        if TARGETS[request.prompt] != target:
            continue
        greedy = sampling.greedy or request.prompt == "to_attributes"
        count = 1 if greedy else sampling.samples
        rows += [prompts[n]] * count
        owners += [(n, greedy)] * count
    outputs: list[dict | None] = [None] * len(rows)
    greedy_mode = Sampling(**{**asdict(sampling), "greedy": True})
    for wanted, mode in ((True, greedy_mode), (False, sampling)):
        subset = [i for i, (_, g) in enumerate(owners) if g == wanted]
        if subset:
            for i, o in zip(
                subset,
                decode(
                    session.model,
                    [rows[i] for i in subset],
                    target,
                    session.tokenizer,
                    mode,
                    generator,
                    done=bar.update,
                ),
            ):
                outputs[i] = o
    for (n, _), o in zip(owners, outputs):
        results[n]["samples"].append(o)


def _result_head(request: Request, prompt: Sequence) -> dict:
    inputs = {k: v for k, v in asdict(request).items() if v is not None}
    return {**inputs, "prompt_tokens": prompt.tokens, "prompt_truncated": prompt.truncated, "samples": []}


def _finish(session, requests, prompts, results, out: Path, clip, keep: int | None) -> None:
    tok = session.tokenizer
    for n, (request, result) in enumerate(zip(requests, results)):
        samples = result["samples"]
        if TARGETS[request.prompt] == IMAGE:
            scores = _write_faces(session, n, request, samples, out, clip)
        else:
            for s in samples:
                s["text"] = tok.decode(s["tokens"])
                if request.prompt == "to_attributes":
                    s["value"] = first_value(s["text"])
            scores = _caption_scores(request, samples, clip)
        if scores is not None:
            _select(result, scores, request.keep if request.keep is not None else keep)
        if request.candidates:
            continuations = [tok.encode(c) for c in request.candidates]
            values = score(session.model, [prompts[n]] * len(continuations), continuations, tok, value_ends(tok))
            result["candidates"] = dict(zip(request.candidates, values))
            result["best_candidate"] = request.candidates[max(range(len(values)), key=values.__getitem__)]


def _write_faces(session, n: int, request: Request, samples: list[dict], out: Path, clip):
    """Decode, write (and CLIP-score) a request's faces a few at a time; the ClipScores or None."""
    from PIL import Image

    from trainer.clip import ClipScores
    from trainer.inference import FACE_BATCH
    from trainer.text import image_codes

    (out / IMAGES_DIR).mkdir(exist_ok=True)
    scores, truncated = [], False
    for start in range(0, len(samples), FACE_BATCH):
        chunk = samples[start : start + FACE_BATCH]
        images = [
            Image.fromarray(a)
            for a in session.decode_faces([image_codes(s["tokens"], session.config.text_vocab_size) for s in chunk])
        ]
        for k, (s, image) in enumerate(zip(chunk, images), start):
            s["image"] = f"{IMAGES_DIR}/{n:05d}-{k:02d}.png"
            image.save(out / s["image"])
        if clip is not None:
            got = clip.text_to_images(request.text, images)
            scores += got.scores
            truncated |= got.truncated
    return ClipScores(scores, truncated) if clip is not None else None


def _caption_scores(request: Request, samples: list[dict], clip):
    """to_caption with a CLIP: the face (as tokenize-images prepares it) against each caption."""
    if clip is None or request.prompt != "to_caption":
        return None
    from PIL import Image

    from facetokens.images import SIZE, BadImage, prepare_face

    try:
        face = Image.fromarray(prepare_face(request.image, None, SIZE))
    except BadImage as e:
        raise UserError(f"cannot read the face {request.image} ({e.reason}: {e.detail})") from None
    return clip.image_to_texts(face, [s["text"] for s in samples])


def _select(result: dict, scores, keep: int | None) -> None:
    """Every sample's CLIP score and rank (1 = best) in results.jsonl; the best `keep` marked kept."""
    from trainer.clip import rank

    order = rank(scores.scores, len(scores.scores))
    kept = order[:keep] if keep is not None else order
    chosen = set(kept)
    for place, i in enumerate(order, 1):
        sample = result["samples"][i]
        sample |= {"clip_score": scores.scores[i], "clip_rank": place, "kept": i in chosen}
    result["kept"] = kept
    result["clip_truncated"] = scores.truncated


def summary_lines(results: list[dict], out: Path) -> list[str]:
    """What the CLI prints: one line per request (with a CLIP, its kept samples, best first, with their scores)."""
    lines = []
    for n, r in enumerate(results):
        what = r.get("text") or r.get("image")
        shown = [r["samples"][i] for i in r["kept"]] if "kept" in r else r["samples"]
        if r["prompt"] == "to_image":
            got = ", ".join(s["image"] + _clip_note(s) for s in shown)
        elif r["prompt"] == "to_attributes":
            got = r["samples"][0]["value"] + (
                f"  (candidates: best {r['best_candidate']})" if "best_candidate" in r else ""
            )
            what = f"{what} {r['attribute']}"
        else:
            got = " | ".join(s["text"] + _clip_note(s) for s in shown)
        if "kept" in r:
            got += f"  [kept {len(r['kept'])} of {len(r['samples'])} by CLIP"
            got += (
                "; the text was cut at CLIP's 77 tokens]"
                if r["clip_truncated"] and r["prompt"] == "to_image"
                else "; a caption was cut at CLIP's 77 tokens]"
                if r["clip_truncated"]
                else "]"
            )
        lines.append(f"{n + 1}. {r['prompt']} {what}: {got}")
    lines.append(f"results: {Path(out) / RESULTS_FILE}")
    return lines


def _clip_note(sample: dict) -> str:
    return f" (CLIP {sample['clip_score']:.2f})" if "clip_score" in sample else ""
