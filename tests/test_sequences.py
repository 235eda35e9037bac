import random

import pytest
import torch

from common.errors import UserError
from trainer.config import load_config
from trainer.model import prefix_mask
from trainer.sequences import IGNORE, Layouts, Sequence, pad_batch
from trainer.text import TextTokenizer

# a small row: 20 positions, 4 image tokens, so every layout can be written out by hand
SMALL = load_config("tiny").replace(seq_length=20, image_tokens=4, max_positions=32)
TOK = TextTokenizer(numbers="digits")
LAYOUTS = Layouts(SMALL, TOK)
CODES = [0, 7, 1023, 5]
IMAGE = [30522, 30529, 31545, 30527]
CLS, SEP, X = 101, 102, IGNORE
A, SMILING, MAN = TOK.encode("a smiling man")
CELEBA = TOK.encode("celeba")  # ce ##le ##ba
BALD, TRUE, COLON, SEMI = TOK.encode("bald")[0], TOK.encode("true")[0], 1024, 1025


def test_caption_to_face_by_hand():
    s = LAYOUTS.caption_to_face("A smiling man", CODES, face="celeba/000001")
    assert s.tokens == [CLS, 2000, 3746, SEP, A, SMILING, MAN, SEP, *IMAGE, SEP]
    assert s.segments == [1] * 8 + [2] * 5
    # the last prefix token ([SEP]) predicts the first image token; the last image token the closing [SEP]
    assert s.labels == [X] * 7 + IMAGE + [SEP, X]
    assert not s.truncated


def test_face_to_caption_by_hand():
    s = LAYOUTS.face_to_caption(CODES, "a smiling man", face="f")
    assert s.tokens == [CLS, 2000, 14408, 3258, SEP, *IMAGE, SEP, A, SMILING, MAN, SEP]
    assert s.segments == [1] * 10 + [2] * 4
    assert s.labels == [X] * 9 + [A, SMILING, MAN, SEP, X]  # the closing [SEP] is predicted


def test_face_to_attributes_by_hand():
    pairs = [{"key": "bald", "value": "true"}]
    s = LAYOUTS.face_to_attributes(CODES, "celeba", pairs, random.Random(0), face="f")
    target = [*CELEBA, BALD, COLON, TRUE, SEP]
    assert s.tokens == [CLS, 2000, 12332, SEP, *IMAGE, SEP, *target]
    assert s.segments == [1] * 9 + [2] * 7
    assert s.labels == [X] * 8 + target + [X]


def test_attributes_to_face_shares_the_to_image_layout():
    s = LAYOUTS.attributes_to_face("celeba", [{"key": "bald", "value": "true"}], CODES, random.Random(0), face="f")
    assert s.tokens == [CLS, 2000, 3746, SEP, *CELEBA, BALD, COLON, TRUE, SEP, *IMAGE, SEP]
    assert s.segments == [1] * 11 + [2] * 5
    assert s.labels == [X] * 10 + IMAGE + [SEP, X]


def test_the_mask_of_a_padded_batch_by_hand():
    rows = [
        LAYOUTS.face_to_caption(CODES, "a man", face="f"),
        LAYOUTS.face_to_caption(CODES, "a smiling man", face="g"),
    ]
    batch = pad_batch(rows)
    assert batch["tokens"].shape == (2, 14)
    assert batch["segments"][0].tolist() == [1] * 10 + [2] * 3 + [0]
    assert batch["labels"][0].tolist() == [X] * 9 + [A, MAN, SEP, X, X]
    mask = prefix_mask(batch["segments"])[0].int()
    assert mask[0].tolist() == [1] * 10 + [0] * 4  # the prefix sees the whole prefix, no target
    assert mask[10].tolist() == [1] * 11 + [0] * 3  # first target token: prefix and itself
    assert mask[12].tolist() == [1] * 13 + [0]  # causal in the target, never the padding
    assert mask[:, 13].sum() == 0  # nobody attends to padding


def test_inference_layouts():
    s = LAYOUTS.to_attributes_prompt(CODES, "gender", face="f")
    assert s.tokens == [CLS, 2000, 12332, SEP, *IMAGE, SEP, 5907, 1024] and s.segments == [1] * 9 + [2] * 2
    assert set(s.labels) == {IGNORE}
    assert LAYOUTS.to_caption_prompt(CODES).tokens == [CLS, 2000, 14408, 3258, SEP, *IMAGE, SEP]
    assert LAYOUTS.to_image_prompt("a man").tokens == [CLS, 2000, 3746, SEP, A, MAN, SEP]
    assert LAYOUTS.to_image_prompt("a man").prefix_length == 7


def test_budgets_come_from_the_config():
    paper = Layouts(load_config("paper"), TextTokenizer(numbers="whole"))
    # 334 = 256 image tokens + their closing [SEP] + [CLS] to image [SEP] <72 text tokens> [SEP]
    assert paper.to_image_text_budget == 334 - 256 - 1 - 5 == 72
    assert paper.face_text_budget("to_caption") == 334 - 262 - 1
    assert paper.face_text_budget("to_attributes") == 334 - 261 - 1
    assert LAYOUTS.to_image_text_budget == 10


def test_long_captions_are_cut_at_a_word_boundary():
    caption = "a smiling man with extraordinarily bushy eyebrows and a very long beard"
    s = LAYOUTS.face_to_caption(CODES, caption, face="f")
    assert s.truncated and len(s.tokens) <= SMALL.seq_length
    text = TOK.decode(s.tokens[s.prefix_length : -1])
    assert caption.startswith(text + " ") and TOK.encode(text) == s.tokens[s.prefix_length : -1]


CELEBA_40 = [{"key": f"attribute {i}", "value": "true" if i % 2 else "false"} for i in range(40)]


def test_long_attribute_texts_are_subsampled_by_whole_pairs_in_order():
    rows = [LAYOUTS.face_to_attributes(CODES, "celeba", CELEBA_40, random.Random(seed), face="f") for seed in range(5)]
    subsets = set()
    for s in rows:
        text = TOK.decode(s.tokens[s.prefix_length : -1])
        assert s.truncated and len(s.tokens) <= SMALL.seq_length and text.startswith("celeba ")
        kept = [p.strip() for p in text.removeprefix("celeba ").split(";")]
        indices = [int(p.split(":")[0].removeprefix("attribute").replace(" ", "")) for p in kept]  # digits mode: "2 3"
        assert kept == [f"attribute {' '.join(str(i))} : {CELEBA_40[i]['value']}" for i in indices]  # whole pairs
        assert indices == sorted(indices) and s.notes["pairs_dropped"] == 40 - len(indices)
        subsets.add(tuple(indices))
    assert len(subsets) > 1  # seeded, random
    again = LAYOUTS.face_to_attributes(CODES, "celeba", CELEBA_40, random.Random(3), face="f")
    assert again.tokens == rows[3].tokens


def test_paper_size_celeba_row_fits():
    paper = Layouts(load_config("paper"), TextTokenizer(numbers="whole"))
    pairs = [{"key": k, "value": "true"} for k in ["bald", "bangs", "big lips", "big nose", "black hair"] * 8]
    s = paper.attributes_to_face("celeba", pairs, list(range(256)), random.Random(0), face="celeba/000001")
    assert len(s.tokens) <= 334 and s.segments.count(2) == 257 and s.tokens[-1] == SEP and s.truncated


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: LAYOUTS.caption_to_face("a man", [0, 1, 2, 1024], face="celeba/000042"),
            "celeba/000042: image code 1024 is outside the codebook of 1024",
        ),
        (
            lambda: LAYOUTS.face_to_caption([0, 1], "a man", face="ffhq/00001"),
            "ffhq/00001: 2 image codes; the model expects 4",
        ),
        (
            lambda: LAYOUTS.face_to_caption(CODES, "a man 😀", face="ffhq/00002"),
            "ffhq/00002: text 'a man 😀' has characters",
        ),
        (lambda: LAYOUTS.face_to_caption(CODES, "   ", face="ffhq/00003"), "ffhq/00003: empty text"),
        (
            lambda: LAYOUTS.face_to_caption(CODES, "pneumonoultramicroscopicsilicovolcanoconiosis", face="ffhq/4"),
            "ffhq/4: the caption's first word alone exceeds the 9-token budget",
        ),
        (
            lambda: LAYOUTS.face_to_attributes(
                CODES,
                "celeba",
                [{"key": "a very very long attribute name", "value": "true"}] * 3,
                random.Random(0),
                face="celeba/7",
            ),
            "celeba/7: no attribute pair fits",
        ),
    ],
)
def test_errors_name_the_face(build, message):
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_pad_batch_to_a_fixed_length():
    batch = pad_batch([LAYOUTS.to_caption_prompt(CODES)], length=SMALL.seq_length)
    assert batch["tokens"].shape == (1, 20) and batch["tokens"].dtype == torch.long
    assert batch["segments"][0, 10:].sum() == 0 and (batch["labels"] == IGNORE).all()


def test_pad_batch_fills_any_row_as_written():
    """Rows of the layouts' shape are filled by slices, any other row element by element: the same padded batch."""
    rows = [
        LAYOUTS.caption_to_face("a smiling man", CODES, "f"),
        LAYOUTS.face_to_caption(CODES, "a man", "f"),
        LAYOUTS.to_caption_prompt(CODES),
        LAYOUTS.to_attributes_prompt(CODES, "gender", face="f"),
        Sequence([5, 6, 7, 8], [1, 2, 1, 2], [X, 7, X, X]),
        Sequence([5, 6, 7], [1, 1, 2], [X, 7, X]),
        Sequence([5, 6, 7], [1, 2, 2], [X, 6, 7]),
        Sequence([5, 6], [2, 2], [6, X]),
        Sequence([5], [1], [X]),
    ]
    batch = pad_batch(rows, length=24)
    for row, s in enumerate(rows):
        n = len(s.tokens)
        assert batch["tokens"][row].tolist() == s.tokens + [0] * (24 - n)
        assert batch["segments"][row].tolist() == s.segments + [0] * (24 - n)
        assert batch["labels"][row].tolist() == s.labels + [X] * (24 - n)
