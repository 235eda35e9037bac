"""Caption metrics in plain Python, as the COCO caption evaluation (pycocoevalcap) computes them.

    bleu4(hypotheses, references)    corpus BLEU-4, brevity penalty against the closest reference length
                                     (pycocoevalcap switches to the average length for a single caption)
    rouge_l(hypotheses, references)  mean over captions of the LCS F-score (beta 1.2) against the best reference
    cider(hypotheses, references)    CIDEr-D: tf-idf n-grams 1-4 (idf over the references), clipping, length
                                     penalty sigma 6, times 10
    meteor(hypotheses, references)   METEOR 1.5 through pycocoevalcap's Java jar (the COCO definition); None
                                     with the reason (`meteor_missing()`) where Java or the jar is not present

`hypotheses` is one caption per face, `references` a list of captions per face. Words are lower-cased
runs of letters and digits (COCO's PTB tokenizer also drops punctuation).
"""

from __future__ import annotations

import atexit
import math
import re
import subprocess
import threading
from collections import Counter

WORD = re.compile(r"[a-z0-9]+")
# pycocoevalcap's BLEU adds these to every count and length (bleu_scorer.py); kept so that the figures agree to
# 1e-12. Where an n-gram order has no match at all, BLEU-4 is 0 here and ~1e-9 there (its smoothing residue).
TINY, SMALL = 1e-15, 1e-9


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu4(hypotheses: list[str], references: list[list[str]]) -> float:
    correct, guessed = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        h, rs = words(hyp), [words(r) for r in refs]
        hyp_len += len(h)
        ref_len += min((len(r) for r in rs), key=lambda n: (abs(n - len(h)), n))  # closest, shorter on ties
        for n in range(1, 5):
            counts = ngrams(h, n)
            most = Counter()
            for r in rs:
                most |= ngrams(r, n)  # max count of each n-gram over the references
            correct[n - 1] += sum(min(c, most[g]) for g, c in counts.items())
            guessed[n - 1] += max(len(h) - n + 1, 0)
    if hyp_len == 0 or min(correct) == 0:
        return 0.0  # pycocoevalcap's smoothing gives ~1e-9 here instead (see TINY)
    log_precision = sum(math.log((c + TINY) / (g + SMALL)) for c, g in zip(correct, guessed)) / 4
    ratio = (hyp_len + TINY) / (ref_len + SMALL)
    brevity = 1 - 1 / ratio if ratio < 1 else 0.0
    return math.exp(log_precision + brevity)


def lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        previous = 0  # row[j - 1] of the previous line
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], previous + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(hypotheses: list[str], references: list[list[str]], beta: float = 1.2) -> float:
    scores = []
    for hyp, refs in zip(hypotheses, references):
        h = words(hyp)
        pairs = [(lcs(words(r), h), len(h), len(words(r))) for r in refs]
        precision = max((m / lh if lh else 0.0) for m, lh, _ in pairs)
        recall = max((m / lr if lr else 0.0) for m, _, lr in pairs)
        scores.append(
            (1 + beta**2) * precision * recall / (recall + beta**2 * precision) if precision and recall else 0.0
        )
    return sum(scores) / len(scores) if scores else 0.0


def cider(hypotheses: list[str], references: list[list[str]], sigma: float = 6.0) -> float:
    """CIDEr-D as pycocoevalcap's `Cider` scorer computes it (document frequencies over these references)."""
    ref_counts = [[_counts(words(r)) for r in refs] for refs in references]
    df: Counter = Counter()
    for refs in ref_counts:
        df.update({g for counts in refs for g in counts})
    log_docs = math.log(float(len(references))) if references else 0.0

    def vector(counts: Counter):
        vec = [{} for _ in range(4)]
        norm = [0.0] * 4
        length = 0
        for g, tf in counts.items():
            n = len(g) - 1
            vec[n][g] = tf * (log_docs - math.log(max(1.0, df[g])))
            norm[n] += vec[n][g] ** 2
            if n == 1:  # pycocoevalcap measures length by bigram count
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    total = 0.0
    for hyp, refs in zip(hypotheses, ref_counts):
        vh, nh, lh = vector(_counts(words(hyp)))
        per_n = [0.0] * 4
        for ref in refs:
            vr, nr, lr = vector(ref)
            for n in range(4):
                value = sum(min(v, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, v in vh[n].items())
                if nh[n] and nr[n]:
                    value /= nh[n] * nr[n]
                per_n[n] += value * math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
        total += sum(per_n) / 4 / len(refs) * 10.0
    return total / len(hypotheses) if hypotheses else 0.0


def _counts(tokens: list[str]) -> Counter:
    out: Counter = Counter()
    for n in range(1, 5):
        out.update(ngrams(tokens, n))
    return out


def meteor_missing() -> str | None:
    """Why METEOR cannot be computed here (`needs Java`, `needs pycocoevalcap`), or None when it can."""
    import importlib.util
    import shutil

    if shutil.which("java") is None:
        return "needs Java"
    if importlib.util.find_spec("pycocoevalcap") is None:
        return "needs pycocoevalcap"
    return None


def meteor(hypotheses: list[str], references: list[list[str]]) -> float | None:
    """COCO's METEOR (pycocoevalcap: meteor-1.5.jar -l en -norm) over our word split; None where unavailable."""
    return meteor_groups({"": (hypotheses, references)}).get("")


def meteor_groups(groups: dict[str, tuple[list[str], list[list[str]]]]) -> dict[str, float | None]:
    """METEOR per group (e.g. per dataset). One Java process serves the calls of this Python process until
    `close_meteor()` (evaluation calls it when done; exit does too): it takes seconds and a gigabyte to load
    its paraphrase table. A process that died while idle is replaced; one that fails mid-call is closed."""
    if meteor_missing():
        return {name: None for name in groups}
    scorer = _meteor_scorer()
    out: dict[str, float | None] = {}
    try:
        for name, (hypotheses, references) in groups.items():
            gts = {i: [" ".join(words(r)) for r in refs] for i, refs in enumerate(references)}
            res = {i: [" ".join(words(h))] for i, h in enumerate(hypotheses)}
            out[name] = scorer.compute_score(gts, res)[0] if hypotheses else None
    except (ValueError, OSError) as e:  # the Java process died (memory) or answered nothing
        from common.errors import UserError

        stderr = close_meteor(scorer).splitlines()
        raise UserError(f"METEOR (java -jar meteor-1.5.jar) failed: {(stderr or [str(e)])[-1][:200]}") from None
    except BaseException:  # interrupted mid-exchange: its unread answers would be the next call's
        close_meteor(scorer)
        raise
    return out


_meteor = None  # the shared pycocoevalcap Meteor
_meteor_lock = threading.Lock()


def _meteor_scorer():
    global _meteor
    with _meteor_lock:
        if _meteor is not None and _meteor.meteor_p.poll() is not None:  # died while idle (a signal, the OOM killer)
            _close(_meteor)
            _meteor = None
        if _meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            _meteor = Meteor()
        return _meteor


def close_meteor(scorer=None) -> str:
    """Stop the METEOR Java process (the shared one by default); the next call starts a new one. Its stderr."""
    global _meteor
    with _meteor_lock:
        scorer = scorer or _meteor
        if scorer is None:
            return ""
        if scorer is _meteor:
            _meteor = None
    return _close(scorer)


def _close(scorer) -> str:
    process = scorer.meteor_p
    try:
        process.stdin.close()  # the jar exits at the end of its input (a second close, in Meteor.__del__, is a no-op)
        process.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):  # it died with unsent input, or hangs
        process.kill()
        process.wait()
    if scorer.lock.locked():  # compute_score does not release it on errors; Meteor.__del__ waits for it
        scorer.lock.release()
    stderr = process.stderr.read().decode(errors="replace").strip()
    process.stdout.close()
    process.stderr.close()
    return stderr


atexit.register(close_meteor)
