"""The model config: one frozen dataclass, read from our JSON or from the released `base_config.json`.

    load_config("paper")                       # the released Talk2Face config (trainer/configs/paper.json)
    load_config("tiny")                        # a few-thousand-parameter model for CPU tests
    load_config("path/to/base_config.json")    # the authors' format, at any size
    load_config("path/to/config.json")         # ours (what `save_config` and checkpoints write)

The text tokenizer's settings live here too, so a checkpoint carries everything needed to use it.
"""
from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True)
class ModelConfig:
    # transformer
    layers: int = 12
    hidden_size: int = 768
    heads: int = 12
    feedforward_size: int = 3072
    max_positions: int = 1024  # rows of the position embedding
    segments: int = 3  # 0 padding, 1 prompt and prefix, 2 target
    dropout: float = 0.1
    layer_norm_eps: float = 1e-6
    # vocabulary: text ids first, then one id per VQGAN code
    text_vocab_size: int = BERT_TEXT_VOCAB_SIZE
    image_vocab_size: int = 1024  # VQGAN codebook entries
    # sequences
    seq_length: int = 334  # the only length: image tokens + prompt and text
    image_tokens: int = 256  # VQGAN codes per face (16 x 16)
    # attention implementation: "sdpa" everywhere, or "flex" (FlexAttention with a block mask, meant for CUDA)
    attention: str = "sdpa"
    # text tokenizer: BERT uncased WordPiece; numbers "whole" as the released weights saw them, or "digits"
    vocab: str = "bert-base-uncased"
    numbers: str = "digits"

    def __post_init__(self):
        self.validate()

    @property
    def vocab_size(self) -> int:
        return self.text_vocab_size + self.image_vocab_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads

    def validate(self) -> None:
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
        if problems:
            raise UserError("model config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"{where}: unknown config keys {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except TypeError as e:
            raise UserError(f"{where}: {e}") from None


def from_released(values: dict, where: str = "base_config.json") -> ModelConfig:
    """Our config from the authors' `base_config.json` (TencentPretrain format), at any size."""
    wrong = [f"{k} is {values.get(k)!r}, expected {v!r}" for k, v in RELEASED_ARCHITECTURE.items() if values.get(k) != v]
    if values.get("emb_size", values.get("hidden_size")) != values.get("hidden_size"):
        wrong.append(f"emb_size {values.get('emb_size')} differs from hidden_size {values.get('hidden_size')}")
    if wrong:
        raise UserError(f"{where}: not the Talk2Face architecture: {'; '.join(wrong)}")
    try:
        frame = values["image_tokenizer"]["frame_size"]  # the VQGAN's downsampling factor, as the authors count codes
        grid = (values["image_height"] // frame) * (values["image_width"] // frame)
        return ModelConfig(
            layers=values["layers_num"], hidden_size=values["hidden_size"], heads=values["heads_num"],
            feedforward_size=values["feedforward_size"], max_positions=values["max_seq_length"],
            dropout=values["dropout"], image_vocab_size=values["image_tokenizer"]["image_vocab_size"],
            seq_length=values["seq_length"], image_tokens=grid, numbers="whole",
        )
    except (KeyError, TypeError) as e:
        raise UserError(f"{where}: missing or malformed released config field {e}") from None


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
