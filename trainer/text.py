"""The text tokenizer: BERT uncased WordPiece, as the released model saw its text.

Lower-casing, accent stripping, punctuation and CJK splitting (`BertNormalizer`, `BertPreTokenizer`),
then greedy longest-match WordPiece over the shipped 30,522-line vocabulary. With `numbers="digits"`
every digit becomes its own word ("19" -> "1", "9"), the paper's proposed fix for ages: the same
vocabulary, so the ids stay compatible. The released weights were trained with `numbers="whole"`.

A word longer than MAX_WORD_CHARS (200, as the authors' framework: docs/fidelity.md) is one [UNK].

Token ids: text 0 .. text_vocab_size-1, then VQGAN code c as text_vocab_size + c.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from common.errors import UserError
from trainer.config import NUMBER_MODES, ModelConfig

VOCAB_DIR = Path(__file__).parent / "vocab"
VOCABS = {"bert-base-uncased": VOCAB_DIR / "bert-base-uncased-vocab.txt"}
PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
MAX_WORD_CHARS = 200  # WordPiece's longest word; longer ones become [UNK] (TencentPretrain's, and Google BERT's)


class TextTokenizer:
    def __init__(self, vocab: str = "bert-base-uncased", numbers: str = "digits"):
        if vocab not in VOCABS:
            raise UserError(f"unknown text vocabulary {vocab!r}; expected one of {', '.join(VOCABS)}")
        if numbers not in NUMBER_MODES:
            raise UserError(f"numbers {numbers!r} is not one of {', '.join(NUMBER_MODES)}")
        self.vocab, self.numbers = vocab, numbers
        self._tokenizer = _build(vocab, numbers)
        # WordPiece costs ~1.5 us a word; attribute texts repeat a lot, and the words of captions
        self._text_ids = functools.lru_cache(maxsize=1 << 16)(self._ids_of_text)
        self._word_ids = functools.lru_cache(maxsize=1 << 17)(self._tokenizer_ids)
        self.vocab_size = self._tokenizer.get_vocab_size()
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (
            self._tokenizer.token_to_id(t) for t in (PAD, UNK, CLS, SEP)
        )

    @classmethod
    def for_config(cls, config: ModelConfig) -> TextTokenizer:
        tokenizer = cls(config.vocab, config.numbers)
        if tokenizer.vocab_size != config.text_vocab_size:
            raise UserError(
                f"text vocabulary {config.vocab} has {tokenizer.vocab_size} tokens; "
                f"the model config expects text_vocab_size {config.text_vocab_size}"
            )
        return tokenizer

    def settings(self) -> dict:
        return {"vocab": self.vocab, "numbers": self.numbers}

    def encode(self, text: str) -> list[int]:
        return list(self._text_ids(text))

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        return [list(self._text_ids(text)) for text in texts]

    def _ids_of_text(self, text: str) -> tuple[int, ...]:
        """On printable ASCII the BERT pipeline is word-local (lower-casing, splitting at spaces and punctuation,
        WordPiece per piece), so the ids of a text are its space-separated words' ids end to end."""
        if text.isascii() and text.isprintable():
            return tuple(i for word in text.split(" ") for i in self._word_ids(word))
        return self._tokenizer_ids(text)

    def _tokenizer_ids(self, text: str) -> tuple[int, ...]:
        return tuple(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def tokens(self, text: str) -> list[str]:
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: list[int]) -> str:
        """Words separated by spaces, `##` pieces joined; ids outside the text vocabulary are refused."""
        outside = [i for i in ids if not 0 <= i < self.vocab_size]
        if outside:
            raise ValueError(f"ids {outside[:5]} are not text tokens (text vocabulary {self.vocab_size})")
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)


@functools.lru_cache(maxsize=4)
def _build(vocab: str, numbers: str) -> Tokenizer:
    wordpiece = models.WordPiece.from_file(str(VOCABS[vocab]), unk_token=UNK, max_input_chars_per_word=MAX_WORD_CHARS)
    tokenizer = Tokenizer(wordpiece)
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    words = pre_tokenizers.BertPreTokenizer()
    if numbers == "digits":
        words = pre_tokenizers.Sequence([words, pre_tokenizers.Digits(individual_digits=True)])
    tokenizer.pre_tokenizer = words
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # cleanup would rewrite "do not" as "don't"
    return tokenizer


def image_token_ids(codes, text_vocab_size: int) -> list[int]:
    """VQGAN code c -> token id text_vocab_size + c."""
    return (np.asarray(codes, dtype=np.int64) + text_vocab_size).tolist()


def image_codes(token_ids, text_vocab_size: int) -> list[int]:
    """Token ids back to VQGAN codes (ids below text_vocab_size are refused)."""
    codes = [int(t) - text_vocab_size for t in token_ids]
    if any(c < 0 for c in codes):
        raise ValueError(f"not image tokens: ids below {text_vocab_size} in {list(token_ids)[:8]}...")
    return codes
