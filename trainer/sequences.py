"""The four task layouts of Talk2Face, shared by training and generation.

    to image    (caption->face, attributes->face)  [CLS] to image [SEP] <text> [SEP] | <image tokens> [SEP]
    to caption  (face->caption)                    [CLS] to caption [SEP] <image tokens> [SEP] | <caption> [SEP]
    to attributes (face->attributes)               [CLS] to attributes [SEP] <image tokens> [SEP] | <attributes> [SEP]

Left of `|` is segment 1 (bidirectional prefix), right is segment 2 (causal target). Labels follow the
authors' framework: the last prefix token predicts the first target token, only target tokens are
predicted (IGNORE elsewhere), and every target's closing [SEP] is predicted, after a text as after the image
tokens (`tgt + [SEP]`, as the authors' framework trains: docs/fidelity.md). Every budget comes from the
config: a to-image row has seq_length - image_tokens - 1 positions for its prefix (paper: 334 - 256 - 1 = 77).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from common.errors import UserError
from trainer.config import ModelConfig
from trainer.model import IGNORE, PAD_SEGMENT, PREFIX_SEGMENT, TARGET_SEGMENT
from trainer.text import TextTokenizer, image_token_ids

PROMPTS = {"to_image": "to image", "to_caption": "to caption", "to_attributes": "to attributes"}
PAIR_SEPARATOR = "; "


class UnfitText(UserError):
    """A face's text that cannot become a row: empty, outside the vocabulary, or too long for its budget.

    Training skips such a face (and counts it); generation reports it as the user's error.
    """


def attribute_head(text: dict) -> str:
    """The words before the first pair of an attribute text (`celeba`, `wiki`): what opens the target."""
    pairs = text.get("attributes") or []
    if pairs:
        first = f"{pairs[0]['key']}: "
        at = text["text"].find(first)
        if at > 0:
            return text["text"][:at].strip()
    return text["dataset"]


@dataclass
class Sequence:
    tokens: list[int]
    segments: list[int]
    labels: list[int]
    truncated: bool = False  # a caption was cut or attribute pairs were left out to fit
    notes: dict = field(default_factory=dict)

    @property
    def prefix_length(self) -> int:
        return self.segments.count(PREFIX_SEGMENT)


class Layouts:
    """Builds every layout for one model config and text tokenizer. `face` names the face in errors."""

    def __init__(self, config: ModelConfig, tokenizer: TextTokenizer):
        if tokenizer.vocab_size != config.text_vocab_size:
            raise UserError(f"tokenizer has {tokenizer.vocab_size} text tokens; config says {config.text_vocab_size}")
        self.config, self.tok = config, tokenizer
        self.prompt_ids = {name: tokenizer.encode(text) for name, text in PROMPTS.items()}

    # ------------------------------------------------------------------ budgets (text tokens, no specials)
    @property
    def to_image_text_budget(self) -> int:
        """Text tokens in `[CLS] to image [SEP] <text> [SEP]` beside the image tokens and their closing [SEP]."""
        return self.config.seq_length - self.config.image_tokens - 1 - len(self.prompt_ids["to_image"]) - 3

    def face_text_budget(self, prompt: str) -> int:
        """Text tokens after `[CLS] <prompt> [SEP] <image> [SEP]`, before the closing [SEP]."""
        prefix = 1 + len(self.prompt_ids[prompt]) + 1 + self.config.image_tokens + 1
        return self.config.seq_length - prefix - 1

    # ------------------------------------------------------------------ training layouts
    def caption_to_face(self, caption: str, codes, face: str) -> Sequence:
        text, cut = self.caption_ids(caption, self.to_image_text_budget, face)
        return self._to_image(text, codes, face, truncated=cut)

    def attributes_to_face(self, dataset: str, pairs: list[dict], codes, rng: random.Random, face: str) -> Sequence:
        text, dropped = self.attribute_ids(dataset, pairs, self.to_image_text_budget, rng, face)
        return self._to_image(text, codes, face, truncated=dropped > 0, notes={"pairs_dropped": dropped})

    def face_to_caption(self, codes, caption: str, face: str) -> Sequence:
        text, cut = self.caption_ids(caption, self.face_text_budget("to_caption"), face)
        return self._to_text("to_caption", codes, text, face, truncated=cut)

    def face_to_attributes(self, codes, dataset: str, pairs: list[dict], rng: random.Random, face: str) -> Sequence:
        text, dropped = self.attribute_ids(dataset, pairs, self.face_text_budget("to_attributes"), rng, face)
        return self._to_text(
            "to_attributes", codes, text, face, truncated=dropped > 0, notes={"pairs_dropped": dropped}
        )

    # ------------------------------------------------------------------ inference layouts (no labels)
    def to_image_prompt(self, text: str, face: str = "prompt") -> Sequence:
        ids, cut = self.caption_ids(text, self.to_image_text_budget, face)
        return _prompt(self._to_image_prefix(ids), [], truncated=cut)

    def to_caption_prompt(self, codes, face: str = "prompt") -> Sequence:
        return _prompt(self._face_prefix("to_caption", self.image_ids(codes, face)), [])

    def to_attributes_prompt(self, codes, key: str, face: str = "prompt", dataset: str | None = None) -> Sequence:
        """The released layout: the attribute name with its colon (`gender :`) starts segment 2."""
        start = self.text_ids(f"{dataset + ' ' if dataset else ''}{key}:", face)
        return _prompt(self._face_prefix("to_attributes", self.image_ids(codes, face)), start)

    # ------------------------------------------------------------------ pieces
    def _to_image(self, text: list[int], codes, face, truncated=False, notes=None) -> Sequence:
        prefix = self._to_image_prefix(text)
        image = self.image_ids(codes, face)
        return _with_labels(prefix, image + [self.tok.sep_id], truncated, notes, self.config.seq_length, face)

    def _to_text(self, prompt: str, codes, text: list[int], face, truncated=False, notes=None) -> Sequence:
        prefix = self._face_prefix(prompt, self.image_ids(codes, face))
        return _with_labels(prefix, text + [self.tok.sep_id], truncated, notes, self.config.seq_length, face)

    def _to_image_prefix(self, text: list[int]) -> list[int]:
        return [self.tok.cls_id, *self.prompt_ids["to_image"], self.tok.sep_id, *text, self.tok.sep_id]

    def _face_prefix(self, prompt: str, image: list[int]) -> list[int]:
        return [self.tok.cls_id, *self.prompt_ids[prompt], self.tok.sep_id, *image, self.tok.sep_id]

    def image_ids(self, codes, face: str) -> list[int]:
        codes = np.asarray(codes, dtype=np.int64)
        if len(codes) != self.config.image_tokens:
            raise UserError(f"{face}: {len(codes)} image codes; the model expects {self.config.image_tokens}")
        if codes.min() < 0 or codes.max() >= self.config.image_vocab_size:
            bad = codes[(codes < 0) | (codes >= self.config.image_vocab_size)]
            raise UserError(f"{face}: image code {bad[0]} is outside the codebook of {self.config.image_vocab_size}")
        return image_token_ids(codes, self.config.text_vocab_size)

    def text_ids(self, text: str, face: str) -> list[int]:
        ids = self.tok.encode(text)
        self._check_tokenized(text, ids, face)
        return ids

    def _check_tokenized(self, text: str, ids: list[int], face: str) -> None:
        if not ids:
            raise UnfitText(f"{face}: empty text {text!r} gives no tokens")
        if self.tok.unk_id in ids:
            raise UnfitText(f"{face}: text {text[:80]!r} has characters outside the vocabulary ([UNK])")

    def caption_ids(self, caption: str, budget: int, face: str) -> tuple[list[int], bool]:
        """The caption's ids, cut at a word (whitespace) boundary to `budget`; True if it was cut."""
        ids = self.text_ids(caption, face)
        if len(ids) <= budget:
            return ids, False
        kept: list[int] = []
        for word in self.tok.encode_many(caption.split()):
            if len(kept) + len(word) > budget:
                break
            kept += word
        if not kept:
            raise UnfitText(f"{face}: the caption's first word alone exceeds the {budget}-token budget")
        return kept, True

    def attribute_ids(
        self, dataset: str, pairs: list[dict], budget: int, rng: random.Random, face: str
    ) -> tuple[list[int], int]:
        """`dataset key: value; key: value` ids; over budget, a random subset of whole pairs, order kept.

        Returns the ids and how many pairs were left out.
        """
        texts = [f"{p['key']}: {p['value']}" for p in pairs]
        head, *pieces = self.tok.encode_many([dataset, *texts])
        separator = self.tok.encode(PAIR_SEPARATOR)
        for text, ids in zip([dataset, *texts], [head, *pieces]):
            self._check_tokenized(text, ids, face)
        chosen = _fitting_pairs([len(p) for p in pieces], budget - len(head), len(separator), rng)
        if pieces and not chosen:
            raise UnfitText(f"{face}: no attribute pair fits the {budget}-token budget beside {dataset!r}")
        ids = list(head)
        for n, i in enumerate(chosen):
            ids += (separator if n else []) + pieces[i]
        return ids, len(pieces) - len(chosen)


def _fitting_pairs(lengths: list[int], budget: int, separator: int, rng: random.Random) -> list[int]:
    """Indices of pairs to keep: all if they fit, else a random subset (in original order) that fits."""
    if sum(lengths) + separator * max(len(lengths) - 1, 0) <= budget:
        return list(range(len(lengths)))
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chosen, used = [], 0
    for i in order:
        cost = lengths[i] + (separator if chosen else 0)
        if used + cost <= budget:
            chosen.append(i)
            used += cost
    return sorted(chosen)


def _with_labels(prefix: list[int], target: list[int], truncated, notes, seq_length: int, face: str) -> Sequence:
    tokens = prefix + target
    if len(tokens) > seq_length:
        raise UserError(f"{face}: sequence of {len(tokens)} tokens does not fit seq_length {seq_length}")
    segments = [PREFIX_SEGMENT] * len(prefix) + [TARGET_SEGMENT] * len(target)
    labels = [IGNORE] * (len(prefix) - 1) + target + [IGNORE]  # position i predicts token i + 1
    return Sequence(tokens, segments, labels, truncated, notes or {})


def _prompt(prefix: list[int], target_start: list[int], truncated: bool = False) -> Sequence:
    tokens = prefix + target_start
    segments = [PREFIX_SEGMENT] * len(prefix) + [TARGET_SEGMENT] * len(target_start)
    return Sequence(tokens, segments, [IGNORE] * len(tokens), truncated)


def pad_batch(sequences: list[Sequence], length: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad to `length` (default: the longest): token 0 ([PAD]), segment 0, label IGNORE."""
    length = length or max(len(s.tokens) for s in sequences)
    tokens = np.zeros((len(sequences), length), dtype=np.int64)  # numpy: ~8x faster than a torch.tensor per row
    segments = np.full_like(tokens, PAD_SEGMENT)
    labels = np.full_like(tokens, IGNORE)
    for row, s in enumerate(sequences):
        n = len(s.tokens)
        tokens[row, :n] = s.tokens
        prefix = s.segments.count(PREFIX_SEGMENT)
        if not _fill_layout_row(s, prefix, tokens[row], segments[row], labels[row]):
            segments[row, :n] = s.segments
            labels[row, :n] = s.labels
    return {
        "tokens": torch.from_numpy(tokens),
        "segments": torch.from_numpy(segments),
        "labels": torch.from_numpy(labels),
    }


def _fill_layout_row(s: Sequence, prefix: int, tokens: np.ndarray, segments: np.ndarray, labels: np.ndarray) -> bool:
    """Fill a row of the layouts' shape (`_with_labels`) by slices, False for any other row.

    Converting a list to numpy costs ~16 ns an element; comparing lists (checking the shape) a fraction of that.
    """
    n, target = len(s.tokens), len(s.tokens) - prefix
    if not (
        prefix
        and len(s.segments) == len(s.labels) == n
        and s.labels[-1] == IGNORE
        and s.segments[prefix:] == [TARGET_SEGMENT] * target
        and s.labels[prefix - 1 : -1] == s.tokens[prefix:]
        and s.labels[: prefix - 1] == [IGNORE] * (prefix - 1)
    ):
        return False
    segments[:prefix], segments[prefix:n] = PREFIX_SEGMENT, TARGET_SEGMENT
    labels[prefix - 1 : n - 1] = tokens[prefix:n]
    return True
