"""trainer.clip: a tiny random CLIP saved with save_pretrained and loaded back; scores, truncation, ranking."""

import numpy as np
import pytest
import torch
from clip_fixture import save_tiny_clip
from PIL import Image

from common.errors import UserError
from trainer.clip import ClipScorer, rank


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def faces(n, size=40):
    return [Image.fromarray((np.random.RandomState(i).rand(size, size, 3) * 255).astype("uint8")) for i in range(n)]


def test_scores_are_the_models_own_similarities(clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    scorer = ClipScorer.load(clip_dir)
    images, texts = faces(3), ["the man has black hair", "a woman", "the hair"]
    model, processor = CLIPModel.from_pretrained(clip_dir), CLIPProcessor.from_pretrained(clip_dir)
    with torch.no_grad():
        out = model(**processor(text=texts, images=images, return_tensors="pt", padding=True))
    expected = 100 * out.logits_per_text / model.logit_scale.exp()  # [texts, images] cosine x 100
    got = scorer.text_to_images(texts[0], images)
    assert got.truncated is False
    assert got.scores == pytest.approx(expected[0].tolist(), abs=1e-4)
    assert scorer.image_to_texts(images[1], texts).scores == pytest.approx(expected[:, 1].tolist(), abs=1e-4)
    assert scorer.pairs(texts, images).scores == pytest.approx(expected.diagonal().tolist(), abs=1e-4)


def test_a_text_past_77_tokens_is_cut_and_said(clip_dir):
    scorer = ClipScorer.load(clip_dir)
    long = "the man " * 60
    scores = scorer.image_to_texts(faces(1)[0], ["the man", long])
    assert scores.truncated is True and len(scores.scores) == 2
    assert scorer.text_to_images(long, faces(2)).truncated is True
    # cut at 77 tokens: the same as the first 77 tokens' worth of text
    cut = scorer.text_to_images(long, faces(1)).scores
    assert cut == pytest.approx(scorer.text_to_images("the man " * 60 + "the woman", faces(1)).scores, abs=1e-5)


@pytest.mark.parametrize(
    "scores, keep, expected",
    [
        ([0.1, 0.9, 0.5], 2, [1, 2]),
        ([0.5, 0.5, 0.9, 0.5], 3, [2, 0, 1]),  # ties keep the original order
        ([0.3], 5, [0]),
        ([], 1, []),
    ],
)
def test_rank(scores, keep, expected):
    assert rank(scores, keep) == expected


def test_rank_refuses_keep_below_one():
    with pytest.raises(UserError, match="keep 0"):
        rank([1.0], 0)


def test_missing_or_invalid_folder_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not a folder") as e:
        ClipScorer.load(tmp_path / "absent")
    assert "\n" not in str(e.value)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not a loadable CLIP") as e:
        ClipScorer.load(tmp_path / "junk")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="not a loadable CLIP"):
        ClipScorer.load(tmp_path)  # an empty folder


def test_another_model_or_missing_weights_are_refused(clip_dir, tmp_path):
    import json
    import shutil

    other = shutil.copytree(clip_dir, tmp_path / "bert")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(UserError, match="'bert' model, not a CLIP"):
        ClipScorer.load(other)
    partial = shutil.copytree(clip_dir, tmp_path / "partial")
    from safetensors.torch import load_file, save_file

    weights = load_file(partial / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if "visual_projection" not in k},
        partial / "model.safetensors",
        metadata={"format": "pt"},
    )
    with pytest.raises(UserError, match="weights missing from the checkpoint .first visual_projection"):
        ClipScorer.load(partial)
