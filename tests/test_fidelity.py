"""Fidelity to the authors' recipe (docs/fidelity.md): the to-image row's closing [SEP], WordPiece's 200-character
words, and the image-token count from the VQGAN's frame_size."""

import json
import random

from trainer.config import CONFIG_DIR, load_config
from trainer.sequences import IGNORE, Layouts
from trainer.text import TextTokenizer

PAPER = load_config("paper")
LAYOUTS = Layouts(PAPER, TextTokenizer(numbers="whole"))


def test_to_image_rows_predict_the_closing_sep_within_334():
    codes = list(range(256))
    for row in (
        LAYOUTS.caption_to_face("a smiling woman " * 60, codes, "f"),
        LAYOUTS.attributes_to_face(
            "celeba", [{"key": f"key {k}", "value": "true"} for k in range(40)], codes, random.Random(0), "f"
        ),
    ):
        sep = LAYOUTS.tok.sep_id
        assert row.tokens[-1] == sep and row.labels[-2] == sep and row.labels[-1] == IGNORE
        assert row.segments.count(2) == 257 and len(row.tokens) <= 334 and row.truncated
    assert LAYOUTS.to_image_text_budget == 72


def test_wordpiece_words_up_to_200_characters():
    tok = LAYOUTS.tok
    assert tok.unk_id not in tok.encode("a" * 200) and tok.encode("a" * 201) == [tok.unk_id]
    assert tok.unk_id not in tok.encode("ab" * 75)  # 150 characters: word pieces (one [UNK] while the limit was 100)


def test_image_tokens_come_from_frame_size(tmp_path):
    released = json.loads((CONFIG_DIR / "released_base_config.json").read_text())
    f8 = {
        **released,
        "patch_size": 16,
        "image_tokenizer": {**released["image_tokenizer"], "frame_size": 8, "image_vocab_size": 8192},
        "seq_length": 1024 + 78,
        "max_seq_length": 1102,
    }
    (tmp_path / "f8.json").write_text(json.dumps(f8))
    config = load_config(tmp_path / "f8.json")
    assert (config.image_tokens, config.image_vocab_size, config.seq_length) == (1024, 8192, 1102)
    assert load_config(CONFIG_DIR / "released_base_config.json").image_tokens == 256
