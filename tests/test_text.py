import pytest

from common.errors import UserError
from trainer.config import load_config
from trainer.text import VOCABS, TextTokenizer, image_codes, image_token_ids

WHOLE = TextTokenizer(numbers="whole")
DIGITS = TextTokenizer(numbers="digits")


def test_shipped_vocabulary_is_bert_uncased():
    lines = VOCABS["bert-base-uncased"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == 30522 == WHOLE.vocab_size
    assert (WHOLE.pad_id, WHOLE.unk_id, WHOLE.cls_id, WHOLE.sep_id) == (0, 100, 101, 102)


@pytest.mark.parametrize(
    "text, ids",
    [
        ("to image", [2000, 3746]),
        ("to caption", [2000, 14408, 3258]),
        ("gender :", [5907, 1024]),
        ("gender:", [5907, 1024]),
        ("To  Caption", [2000, 14408, 3258]),
    ],
)
def test_prompts_tokenize_as_the_released_model_saw_them(text, ids):
    assert WHOLE.encode(text) == ids == DIGITS.encode(text)


def test_to_attributes_goes_through_wordpiece_the_same_way():
    assert WHOLE.tokens("to attributes") == ["to", "attributes"]


def test_lower_casing_accents_and_punctuation_as_bert_uncased():
    assert WHOLE.tokens("Café NAÏVE, smiling!") == ["cafe", "naive", ",", "smiling", "!"]
    assert WHOLE.tokens("celeba") == ["ce", "##le", "##ba"]


def greedy_wordpiece(word: str, vocab: set[str]) -> list[str]:
    """WordPiece as BERT defines it: longest vocabulary prefix first, continuations marked ##."""
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start and (("##" if start else "") + word[start:end]) not in vocab:
            end -= 1
        if end == start:
            return ["[UNK]"]
        pieces.append(("##" if start else "") + word[start:end])
        start = end
    return pieces


def test_wordpiece_agrees_with_the_greedy_definition():
    vocab = set(VOCABS["bert-base-uncased"].read_text(encoding="utf-8").splitlines())
    for word in ["caption", "attributes", "eyeglasses", "mustache", "sideburns", "fairface", "imdb", "goatee", "zzqx"]:
        assert WHOLE.tokens(word) == greedy_wordpiece(word, vocab), word


def test_cached_encoding_is_the_tokenizers_encoding():
    import random

    rng = random.Random(0)
    ascii = "abcXYZ019 .,:;!?-'\"()[]#@~    "
    other = ascii + "\t\n\x1c\x7féçüß中文"  # \x1c splits in str.split(), not in BERT
    texts = ["".join(rng.choice(a) for _ in range(rng.randrange(0, 40))) for a in (ascii, other) for _ in range(1500)]
    texts += ["young:  true; wavy hair: false", " leading and trailing ", "a" * 150, "an unaffable 1990s smile"]
    for tokenizer in (WHOLE, DIGITS):
        for text in texts * 2:  # the second time from the cache
            assert tokenizer.encode(text) == tokenizer._tokenizer.encode(text, add_special_tokens=False).ids, text
        assert tokenizer.encode_many(texts) == [
            e.ids for e in tokenizer._tokenizer.encode_batch(texts, add_special_tokens=False)
        ]


def test_digits_mode_splits_numbers_into_single_digits():
    assert WHOLE.tokens("wiki age: 19") == ["wi", "##ki", "age", ":", "19"]
    assert DIGITS.tokens("wiki age: 19") == ["wi", "##ki", "age", ":", "1", "9"]
    assert DIGITS.tokens("age: 10-19, 2023") == ["age", ":", "1", "0", "-", "1", "9", ",", "2", "0", "2", "3"]
    assert DIGITS.encode("19") == [1015, 1023]  # the same vocabulary: ids of "1" and "9"


@pytest.mark.parametrize(
    "text",
    [
        "a young woman with blond hair is smiling.",
        "celeba gender: male; bald: true; oval face: false",
        "fairface age: 10-19; gender: female; race: east asian",
        "he doesn't wear eyeglasses; he is 37 years old",
    ],
)
@pytest.mark.parametrize("tokenizer", [WHOLE, DIGITS])
def test_detokenization_gives_words_and_round_trips(text, tokenizer):
    ids = tokenizer.encode(text)
    words = tokenizer.decode(ids)
    assert "##" not in words
    assert tokenizer.encode(words) == ids
    assert words.replace(" ", "") == text.replace(" ", "")  # same characters: only spacing around punctuation differs


def test_decode_refuses_image_tokens():
    with pytest.raises(ValueError, match="not text tokens"):
        WHOLE.decode([2000, 30522])


def test_image_codes_map_after_the_text_vocabulary():
    assert image_token_ids([0, 5, 1023], 30522) == [30522, 30527, 31545]
    assert image_codes([30522, 31545], 30522) == [0, 1023]
    with pytest.raises(ValueError):
        image_codes([102], 30522)


def test_tokenizer_follows_the_config():
    assert TextTokenizer.for_config(load_config("paper")).settings() == {
        "vocab": "bert-base-uncased",
        "numbers": "whole",
    }
    assert TextTokenizer.for_config(load_config("tiny")).numbers == "digits"
    with pytest.raises(UserError, match="text_vocab_size 30000"):
        TextTokenizer.for_config(load_config("tiny").replace(text_vocab_size=30000))
    with pytest.raises(UserError, match="numbers 'roman'"):
        TextTokenizer(numbers="roman")
