"""trainer.metrics against pycocoevalcap (a test-only oracle): BLEU-4, ROUGE-L and CIDEr-D to 1e-12; METEOR is
pycocoevalcap's own Java METEOR 1.5, or None (printed `n/a (needs Java)`) where Java is missing."""

import random

import pytest

from trainer import metrics

pycocoevalcap = pytest.importorskip(
    "pycocoevalcap",
    reason="the COCO oracle comes with the dev extra: bash scripts/install.sh (pip install -e '.[dev]')",
)

WORDS = [
    "the",
    "a",
    "man",
    "woman",
    "has",
    "black",
    "brown",
    "blond",
    "hair",
    "eyes",
    "smiling",
    "young",
    "old",
    "wears",
    "glasses",
    "beard",
    "nose",
    "big",
    "small",
]


def corpus(seed: int, copy_every: int):
    """Random captions; every `copy_every`-th hypothesis copies its first reference (so all n-gram orders match)."""
    rng = random.Random(seed)

    def sentence():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + rng.choice(["", ".", "!"])

    refs = [[sentence().capitalize() for _ in range(rng.randint(1, 5))] for _ in range(40)]
    hyps = [rs[0] if copy_every and i % copy_every else sentence() for i, rs in enumerate(refs)]
    return hyps, refs


def coco(hyps, refs):
    """pycocoevalcap's inputs: the same word split as ours (COCO's PTB tokenizer also drops punctuation)."""
    gts = {i: [" ".join(metrics.words(r)) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(metrics.words(h))] for i, h in enumerate(hyps)}
    return gts, res


@pytest.mark.parametrize("seed, copy_every", [(0, 3), (1, 2), (2, 5), (3, 4)])
def test_bleu_rouge_cider_match_pycocoevalcap(seed, copy_every):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps, refs = corpus(seed, copy_every)
    gts, res = coco(hyps, refs)
    assert metrics.bleu4(hyps, refs) == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3], abs=1e-12)
    assert metrics.rouge_l(hyps, refs) == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)
    assert metrics.cider(hyps, refs) == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)


def test_bleu_without_any_4gram_match_is_zero_where_coco_leaves_its_smoothing():
    from pycocoevalcap.bleu.bleu import Bleu

    hyps, refs = corpus(4, 0)
    gts, res = coco(hyps, refs)
    theirs = Bleu(4).compute_score(gts, res, verbose=0)[0][3]
    assert metrics.bleu4(hyps, refs) == 0.0 and 0 < theirs < 1e-6


@pytest.mark.skipif(
    metrics.meteor_missing() is not None,
    reason="METEOR 1.5 is a Java jar: install a JRE (e.g. apt-get install default-jre) and the dev extra",
)
def test_meteor_is_cocos_meteor():
    from pycocoevalcap.meteor.meteor import Meteor

    hyps, refs = corpus(5, 2)
    hyps, refs = hyps[:6], refs[:6]
    gts, res = coco(hyps, refs)
    scorer = metrics._meteor_scorer()  # pycocoevalcap's own Meteor, on COCO's tokens (one Java load, not two)
    assert type(scorer) is Meteor
    expected, _ = scorer.compute_score(gts, res)
    assert metrics.meteor(hyps, refs) == pytest.approx(expected, abs=1e-12)
    assert 0 < expected <= 1


def test_meteor_without_java_is_none(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert metrics.meteor_missing() == "needs Java"
    assert metrics.meteor(["a man"], [["a man"]]) is None


def fake_meteor(script: str):
    """pycocoevalcap's own Meteor wrapper around a shell process standing in for the jar."""
    import subprocess
    import threading

    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor.__new__(Meteor)
    scorer.lock = threading.Lock()
    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    scorer.meteor_p = subprocess.Popen(["sh", "-c", script], **pipes)
    return scorer


def test_a_meteor_process_dying_mid_call_is_one_line_and_is_not_reused(monkeypatch):
    from common.errors import UserError

    monkeypatch.setattr(metrics, "meteor_missing", lambda: None)
    dying = fake_meteor("read line; echo 'java.lang.OutOfMemoryError: Java heap space' >&2; exit 1")
    monkeypatch.setattr(metrics, "_meteor", dying)  # as Java would: alive when asked, gone before it answers
    with pytest.raises(UserError, match="failed: java.lang.OutOfMemoryError: Java heap space$"):
        metrics.meteor(["a man"], [["a man smiles"]])
    assert metrics._meteor is None and not dying.lock.locked() and dying.meteor_p.returncode == 1


def test_a_meteor_process_that_died_while_idle_is_replaced(monkeypatch):
    import pycocoevalcap.meteor.meteor as coco

    dead = fake_meteor("exit 0")
    dead.meteor_p.wait()
    monkeypatch.setattr(metrics, "_meteor", dead)
    started = fake_meteor("cat > /dev/null")  # like the jar: ends at the end of its input
    monkeypatch.setattr(coco, "Meteor", lambda: started)
    fresh = metrics._meteor_scorer()
    assert fresh is started is metrics._meteor and dead.meteor_p.stdout.closed
    metrics.close_meteor()
    assert metrics._meteor is None and fresh.meteor_p.returncode is not None
