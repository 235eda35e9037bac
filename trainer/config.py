"""The model config: one frozen dataclass, read from our JSON or from the released `base_config.json`.

    load_config("paper")                       # the released Talk2Face config (trainer/configs/paper.json)
    load_config("tiny")                        # a few-thousand-parameter model for CPU tests
    load_config("path/to/base_config.json")    # the authors' format, at any size
    load_config("path/to/config.json")         # ours (what `save_config` and checkpoints write)

The text tokenizer's settings live here too, so a checkpoint carries everything needed to use it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"
PRESETS = ("paper", "demo", "tiny")  # demo: small, with the real 256 image tokens (the built-in demo)
ATTENTION_KINDS = ("sdpa", "flex")
NUMBER_MODES = ("whole", "digits")
BERT_TEXT_VOCAB_SIZE = 30522  # lines of the shipped BERT uncased vocabulary; the released config does not say it

# What the released config must say for our model to be its architecture.
RELEASED_ARCHITECTURE = {
    "hidden_act": "gelu_fast",
    "embedding": ["word", "pos", "seg"],
    "remove_embedding_layernorm": True,
    "layernorm_positioning": "pre",
    "encoder": "transformer",
    "mask": "prefix",
    "target": ["lm"],
}


INT_FIELDS = (
    "layers",
    "hidden_size",
    "heads",
    "feedforward_size",
    "max_positions",
    "segments",
    "text_vocab_size",
    "image_vocab_size",
    "seq_length",
    "image_tokens",
)


# What the released config implies without saying it (the released weights' tokenizer and layout).
RELEASED_IMPLIED = {
    "segments": 3,
    "layer_norm_eps": 1e-6,
    "text_vocab_size": BERT_TEXT_VOCAB_SIZE,
    "attention": "sdpa",
    "vocab": "bert-base-uncased",
    "numbers": "whole",
}


@dataclass(frozen=True)
class ModelConfig:
    """No defaults: every value comes from a file (`trainer/configs/` holds the presets)."""

    # transformer
    layers: int
    hidden_size: int
    heads: int
    feedforward_size: int
    max_positions: int  # rows of the position embedding
    segments: int  # 0 padding, 1 prompt and prefix, 2 target
    dropout: float
    layer_norm_eps: float
    # vocabulary: text ids first, then one id per VQGAN code
    text_vocab_size: int
    image_vocab_size: int  # VQGAN codebook entries
    # sequences
    seq_length: int  # the only length: image tokens + prompt and text
    image_tokens: int  # VQGAN codes per face (16 x 16)
    # attention implementation: "sdpa" everywhere, or "flex" (FlexAttention with a block mask, meant for CUDA)
    attention: str
    # text tokenizer: BERT uncased WordPiece; numbers "whole" as the released weights saw them, or "digits"
    vocab: str
    numbers: str

    def __post_init__(self):
        self.validate()

    @property
    def vocab_size(self) -> int:
        return self.text_vocab_size + self.image_vocab_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads

    def validate(self) -> None:
        problems = field_type_problems(self)
        if not problems:
            problems = self._range_problems() or self._consistency_problems()
        if problems:
            raise UserError("model config: " + "; ".join(problems))

    def _range_problems(self) -> list[str]:
        problems = [
            f"{name} {getattr(self, name)}: must be at least 1" for name in INT_FIELDS if getattr(self, name) < 1
        ]
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout {self.dropout}: must be in [0, 1)")
        if not (math.isfinite(self.layer_norm_eps) and self.layer_norm_eps > 0):
            problems.append(f"layer_norm_eps {self.layer_norm_eps}: must be a positive number")
        return problems

    def _consistency_problems(self) -> list[str]:
        problems = []
        if self.hidden_size % self.heads:
            problems.append(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.seq_length > self.max_positions:
            problems.append(f"seq_length {self.seq_length} exceeds max_positions {self.max_positions}")
        if self.image_tokens >= self.seq_length:
            problems.append(f"image_tokens {self.image_tokens} leave no room in seq_length {self.seq_length}")
        if self.attention not in ATTENTION_KINDS:
            problems.append(f"attention {self.attention!r} is not one of {', '.join(ATTENTION_KINDS)}")
        if self.numbers not in NUMBER_MODES:
            problems.append(f"numbers {self.numbers!r} is not one of {', '.join(NUMBER_MODES)}")
        if self.segments != 3:
            problems.append(f"segments {self.segments}: the prefix-LM needs exactly 3 (padding, prefix, target)")
        return problems

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> ModelConfig:
        check_keys(cls, values, where, what="model config")
        try:
            return cls(**values)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None


# ---------------------------------------------------------------------- checks shared by every config dataclass
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "int | None": (int, type(None))}


def field_type_problems(obj) -> list[str]:
    """`name: expected T, got V` for each field of a dataclass whose value has the wrong type (bool is no number)."""
    problems = []
    for f in dataclasses.fields(obj):
        expected, value = _TYPES.get(str(f.type)), getattr(obj, f.name)
        if expected is None:
            continue
        if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
            problems.append(f"{f.name}: expected {f.type}, got {value!r}")
    return problems


def check_keys(cls, values, where: str, what: str) -> None:
    """One line naming `where` and the field when `values` is not an object, has an unknown key or misses one
    (no value is ever filled in from a default or a preset)."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: the {what} must be a JSON object, got {type(values).__name__}")
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"{where}: unknown {what} key {', '.join(unknown)}; expected some of {', '.join(sorted(known))}"
        )
    missing = [f.name for f in fields if f.name not in values]  # the files we read are written whole
    if missing:
        raise UserError(f"{where}: the {what} misses {', '.join(missing)} (no value is filled in from a preset)")


# ---------------------------------------------------------------------- size
def parameter_count(config: ModelConfig) -> int:
    """Parameters of `Talk2Face(config)`, by arithmetic (no tensor is allocated)."""
    h, ff = config.hidden_size, config.feedforward_size
    embeddings = (config.vocab_size + config.max_positions + config.segments) * h
    layer = 4 * (h * h + h) + (h * ff + ff) + (ff * h + h) + 2 * 2 * h  # attention, feed-forward, two LayerNorms
    return embeddings + config.layers * layer + 2 * h + h * config.vocab_size  # final LayerNorm, output layer


def training_bytes(config: ModelConfig, rows: int) -> int:
    """A lower bound of training memory: fp32 weights, gradients and two AdamW moments (16 bytes a parameter),
    plus one micro-batch's logits and their gradient. Activations come on top."""
    return 16 * parameter_count(config) + 2 * 4 * rows * config.seq_length * config.vocab_size


def check_fits_memory(config: ModelConfig, rows: int, available: int, where: str) -> None:
    """Refuse, before anything is allocated, a model whose training needs more than `available` bytes."""
    needed = training_bytes(config, rows)
    if needed > available:
        raise UserError(
            f"{where}: training this model needs at least {needed / 2**30:,.1f} GiB "
            f"({parameter_count(config):,} parameters, micro-batch {rows} x {config.seq_length} tokens); "
            f"the device has {available / 2**30:,.1f} GiB"
        )


def from_released(values: dict, where: str = "base_config.json") -> ModelConfig:
    """Our config from the authors' `base_config.json` (TencentPretrain format), at any size."""
    wrong = [
        f"{k} is {values.get(k)!r}, expected {v!r}" for k, v in RELEASED_ARCHITECTURE.items() if values.get(k) != v
    ]
    if values.get("emb_size", values.get("hidden_size")) != values.get("hidden_size"):
        wrong.append(f"emb_size {values.get('emb_size')} differs from hidden_size {values.get('hidden_size')}")
    if wrong:
        raise UserError(f"{where}: not the Talk2Face architecture: {'; '.join(wrong)}")
    try:
        frame = values["image_tokenizer"]["frame_size"]  # the VQGAN's downsampling factor, as the authors count codes
        grid = (values["image_height"] // frame) * (values["image_width"] // frame)
        return ModelConfig(
            layers=values["layers_num"],
            hidden_size=values["hidden_size"],
            heads=values["heads_num"],
            feedforward_size=values["feedforward_size"],
            max_positions=values["max_seq_length"],
            dropout=values["dropout"],
            image_vocab_size=values["image_tokenizer"]["image_vocab_size"],
            seq_length=values["seq_length"],
            image_tokens=grid,
            **RELEASED_IMPLIED,
        )
    except (KeyError, TypeError, ZeroDivisionError) as e:
        raise UserError(f"{where}: missing or malformed released config field {e}") from None
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def is_released_format(values: dict) -> bool:
    return "layers_num" in values or "heads_num" in values


def load_config(name_or_path: str | Path) -> ModelConfig:
    """A preset name (`paper`, `tiny`) or a JSON file in our format or the released one."""
    from common.fileio import read_json_object

    path = CONFIG_DIR / f"{name_or_path}.json" if str(name_or_path) in PRESETS else Path(name_or_path)
    values = read_json_object(path, "JSON config", missing=f"config not found (or use a preset: {', '.join(PRESETS)})")
    return from_released(values, str(path)) if is_released_format(values) else ModelConfig.from_dict(values, str(path))


def save_config(config: ModelConfig, path: Path) -> None:
    from common.fileio import write_json

    write_json(config.to_dict(), path)
