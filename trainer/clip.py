"""CLIP scores between texts and faces, for picking the best of many samples (the paper's section 3.3).

    scorer = ClipScorer.load("clip-vit-base-patch32/")         # a local Hugging Face folder, nothing downloads
    scores = scorer.text_to_images("This man has black hair.", faces)   # one text against many faces
    kept = rank(scores.scores, keep=2)                          # indices of the best two, best first

The folder is what `CLIPModel.save_pretrained` and `CLIPProcessor.save_pretrained` write (e.g.
`openai/clip-vit-base-patch32`). A score is CLIP's own: 100 x the cosine similarity of the two embeddings
(`logit_scale` is not applied, so scores compare across models and runs). A text longer than CLIP's
77 tokens is cut there, and `ClipScores.truncated` says so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from common.errors import UserError, first_line

log = logging.getLogger(__name__)

SCALE = 100.0  # CLIPScore's convention: 100 x cosine similarity
BATCH = 32  # images or texts embedded together


@dataclass(frozen=True)
class ClipScores:
    scores: list[float]
    truncated: bool  # some text exceeded CLIP's token limit and was cut there


def rank(scores: list[float], keep: int) -> list[int]:
    """Indices of the `keep` best scores, best first; equal scores keep their original order."""
    if keep < 1:
        raise UserError(f"keep {keep}: need at least 1")
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:keep]


def require_folder(folder: Path | str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(
            f"--clip {folder}: not a folder; expected a CLIP saved with save_pretrained "
            f"(e.g. openai/clip-vit-base-patch32: config.json, model.safetensors, tokenizer and "
            f"preprocessor files)"
        )
    return folder


class ClipScorer:
    def __init__(self, model, processor, device: str = "cpu"):
        self.model, self.processor, self.device = model, processor, device
        self.max_tokens = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def load(cls, folder: Path | str, device: str = "cpu") -> ClipScorer:
        """A local CLIP folder (model + processor); one UserError line when it is missing or not a CLIP."""
        folder = require_folder(folder)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import CLIPModel, CLIPProcessor
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the "no torchvision: PIL image processor" notice is expected here
        try:
            _check_model_type(folder)
            model, info = CLIPModel.from_pretrained(folder, local_files_only=True, output_loading_info=True)
            processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"--clip {folder}: not a loadable CLIP model and processor ({first_line(e)})") from None
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = info.get("missing_keys") or []
        if missing:  # transformers would fill them with random values and only warn
            raise UserError(
                f"--clip {folder}: {len(missing)} weights missing from the checkpoint "
                f"(first {min(missing)}): not a complete CLIP"
            )
        if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
            raise UserError(f"--clip {folder}: the processor lacks a tokenizer or an image processor")
        if len(processor.tokenizer) > model.config.text_config.vocab_size:
            raise UserError(
                f"--clip {folder}: the tokenizer has {len(processor.tokenizer)} tokens, more than the "
                f"model's {model.config.text_config.vocab_size}"
            )
        return cls(model.to(device).eval(), processor, device)

    @torch.no_grad()
    def _image_embeddings(self, images: list) -> torch.Tensor:
        parts = []
        for start in range(0, len(images), BATCH):
            pixels = self.processor.image_processor(
                images=[i.convert("RGB") for i in images[start : start + BATCH]], return_tensors="pt"
            )["pixel_values"]
            parts.append(_unit(_features(self.model.get_image_features(pixel_values=pixels.to(self.device)))))
        return torch.cat(parts)

    @torch.no_grad()
    def _text_embeddings(self, texts: list[str]) -> tuple[torch.Tensor, bool]:
        tokenizer = self.processor.tokenizer
        full = tokenizer(texts, truncation=False)["input_ids"]
        truncated = any(len(ids) > self.max_tokens for ids in full)
        if truncated:
            log.info("a text is longer than CLIP's %d tokens: cut there", self.max_tokens)
        parts = []
        for start in range(0, len(texts), BATCH):
            batch = tokenizer(
                texts[start : start + BATCH],
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            features = self.model.get_text_features(
                input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device)
            )
            parts.append(_unit(_features(features)))
        return torch.cat(parts), truncated

    def text_to_images(self, text: str, images: list) -> ClipScores:
        """One text against many faces (PIL images): a score per face, in order."""
        if not images:
            return ClipScores([], False)
        text_vector, truncated = self._text_embeddings([text])
        return ClipScores((SCALE * self._image_embeddings(images) @ text_vector[0]).tolist(), truncated)

    def image_to_texts(self, image, texts: list[str]) -> ClipScores:
        """One face (a PIL image) against many captions: a score per caption, in order."""
        if not texts:
            return ClipScores([], False)
        text_vectors, truncated = self._text_embeddings(texts)
        return ClipScores((SCALE * text_vectors @ self._image_embeddings([image])[0]).tolist(), truncated)

    def pairs(self, texts: list[str], images: list) -> ClipScores:
        """Each text against its own face (same length): the mean of these is evaluate's CLIP score."""
        if len(texts) != len(images):
            raise ValueError("pairs needs one face per text")
        if not texts:
            return ClipScores([], False)
        text_vectors, truncated = self._text_embeddings(texts)
        return ClipScores((SCALE * (text_vectors * self._image_embeddings(images)).sum(-1)).tolist(), truncated)


def _check_model_type(folder: Path) -> None:
    import json

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"config.json: {first_line(e)}") from None
    if not isinstance(config, dict) or config.get("model_type") != "clip":
        found = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"config.json is a {found!r} model, not a CLIP")


def _features(output) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output object with the pooled projection (5)."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors.float(), dim=-1)
