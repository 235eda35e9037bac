"""Evaluation: the caption metrics against hand-computed values, vocabularies, and `evaluate` end to end."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cli
from common.errors import UserError
from facetokens.shards import Face, sample, write_shard
from trainer import metrics
from trainer.config import load_config
from trainer.evaluate import number, read_faces, vocabularies
from trainer.model import Talk2Face
from trainer.sequences import attribute_head
from trainer.weights import export

TINY = load_config("tiny")


# ---------------------------------------------------------------------- metrics by hand
def test_bleu4_by_hand():
    # 1-4 gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths, no brevity penalty
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert metrics.bleu4(["the cat sat on the mat"], [["the cat sat on a mat"]]) == pytest.approx(expected)
    # every n-gram right but one word short of the closest reference (6, not 8): brevity exp(1 - 6/5)
    assert metrics.bleu4(["a b c d e"], [["a b c d e f", "a b c d e f g h"]]) == pytest.approx(math.exp(-0.2))
    assert metrics.bleu4(["x y z w"], [["a b c d"]]) == 0.0


def test_rouge_l_by_hand():
    # LCS 5: precision 5/6, recall 1; F = (1 + 1.2^2) P R / (R + 1.2^2 P)
    p, r = 5 / 6, 1.0
    expected = (1 + 1.44) * p * r / (r + 1.44 * p)
    assert metrics.rouge_l(["The cat sat on the mat."], [["the cat on the mat", "a dog"]]) == pytest.approx(expected)
    assert metrics.lcs(list("abcbdab"), list("bdcaba")) == 4


def test_cider_by_hand():
    # two faces, disjoint references: every n-gram has idf log(2); an exact copy scores (1 + 1 + 0 + 0) / 4 * 10
    assert metrics.cider(["a b", "c d"], [["a b"], ["c d"]]) == pytest.approx(5.0)
    # "a" against "a b": unigram cosine 1/sqrt(2), no bigrams, length penalty exp(-(0 - 1)^2 / 72)
    first = (1 / math.sqrt(2)) * math.exp(-1 / 72) / 4 * 10
    assert metrics.cider(["a", "c d"], [["a b"], ["c d"]]) == pytest.approx((first + 5.0) / 2)
    # words every reference shares carry no information
    assert metrics.cider(["a b"], [["a b"]]) == 0.0


# ---------------------------------------------------------------------- pieces
def test_vocabularies_come_from_the_manifests():
    vocab = vocabularies()
    assert vocab["celeba"]["gender"] == ["male", "female"] and vocab["celeba"]["oval face"] == ["true", "false"]
    assert len(vocab["celeba"]) == 40
    assert "east asian" in vocab["fairface"]["race"] and "10-19" in vocab["fairface"]["age"]
    assert "neutral" in vocab["affectnet"]["expression"] and "uncertain" not in vocab["affectnet"]["expression"]
    assert "no beard" in vocab["celeba_dialog"] and "cacd" not in vocab  # ages are numbers, not a vocabulary


def test_attribute_head_and_numbers():
    text = {
        "dataset": "imdb_wiki",
        "text": "wiki age: 10; gender: female",
        "attributes": [{"key": "age", "value": "10"}, {"key": "gender", "value": "female"}],
    }
    assert attribute_head(text) == "wiki"
    assert number("2 5") == 25.0 and number("10 - 19") is None and number("nan") is None


# ---------------------------------------------------------------------- end to end
def face(n: int, split: str) -> Face:
    texts = [
        {
            "dataset": "celeba",
            "kind": "attributes",
            "text": "celeba gender: male; smiling: true",
            "attributes": [{"key": "gender", "value": "male"}, {"key": "smiling", "value": "true"}],
        },
        {
            "dataset": "cacd",
            "kind": "attributes",
            "text": "cacd age: 25",
            "attributes": [{"key": "age", "value": "25"}],
        },
        {"dataset": "celeba_text_hq", "kind": "caption", "text": "the man has short black hair.", "attributes": None},
        {"dataset": "celeba_text_hq", "kind": "caption", "text": "he is smiling.", "attributes": None},
    ]
    return Face(f"celeba/{n:06d}", "celeba", "/nowhere.jpg", f"{n:06d}.jpg", None, split, texts)


def write_shards(folder, per_split: bool):
    rng = np.random.default_rng(0)
    faces = [face(n, split) for n, split in enumerate(["train", "val", "val", "test", "val"])]
    groups = {s: [f for f in faces if f.split == s] for s in ("train", "val", "test")} if per_split else {"": faces}
    for name, group in groups.items():
        out = folder / name
        out.mkdir(parents=True, exist_ok=True)
        write_shard(out, 0, [sample(f, rng.integers(0, 1024, TINY.image_tokens)) for f in group], [], 0, len(group))


@pytest.mark.parametrize("per_split", [True, False])
def test_split_folders_or_one_folder_filtered_by_split(tmp_path, per_split):
    write_shards(tmp_path, per_split)
    faces = read_faces(tmp_path, "val")
    assert [m["image_id"] for m, _ in faces] == ["celeba/000001", "celeba/000002", "celeba/000004"]
    assert len(read_faces(tmp_path, "val", limit=2)) == 2 and len(faces[0][1]) == TINY.image_tokens
    with pytest.raises(UserError, match="no shard"):
        read_faces(tmp_path / "nothing", "val")


def test_evaluate_through_the_cli_writes_table_and_json(tmp_path):
    write_shards(tmp_path / "shards", per_split=True)
    torch.manual_seed(0)
    export(Talk2Face(TINY), tmp_path / "model")
    result = CliRunner().invoke(
        cli.main,
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "model"),
            "--shards",
            str(tmp_path / "shards"),
            "--split",
            "val",
            "--out",
            str(tmp_path / "eval"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "## The paper's tasks" in result.output and "AffectNet expression" in result.output
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["faces"] == 3
    gender = report["attributes"]["celeba/gender"]
    assert gender["n"] == 3 and 0 <= gender["accuracy"] <= 1 and gender["ranked_n"] == 3
    age = report["attributes"]["cacd/age"]
    assert "ranked_accuracy" not in age and "not_a_number" in age and "mae" in age
    captions = report["captions"]["celeba_text_hq"]
    assert captions["faces"] == 3 and set(captions) >= {"bleu4", "rouge_l", "cider"}
    assert set(report["losses"]) == {"caption_to_face", "face_to_caption", "attributes_to_face", "face_to_attributes"}
    assert all(0 < r["loss"] < 20 for r in report["losses"].values())
    paper = {r["task"]: r for r in report["paper"]}
    assert paper["AffectNet expression"]["paper"] == 44.7 and paper["AffectNet expression"]["ours"] is None
    assert paper["CelebA multi-attribute"]["ours"] is not None
    assert (tmp_path / "eval" / "evaluation.md").read_text().startswith("# Evaluation of")


def test_evaluate_skips_what_has_no_data_and_leaves_damaged_shards_out_only_when_asked(tmp_path):
    """A corpus without captions (Table 5b, e.g. FairFace alone): captions are skipped and said so; a damaged shard
    is refused in one line, or with --skip-bad-shards left out and named in the report."""
    rng = np.random.default_rng(0)
    val = tmp_path / "shards" / "val"
    val.mkdir(parents=True)
    for index in range(2):
        faces = [face(n, "val") for n in range(2 * index, 2 * index + 2)]
        for f in faces:
            f.texts[:] = [t for t in f.texts if t["kind"] == "attributes"]
        write_shard(val, index, [sample(f, rng.integers(0, 1024, TINY.image_tokens)) for f in faces], [], 0, 2)
    tar = val / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[:1024])  # cut short: its stats file says otherwise
    torch.manual_seed(0)
    export(Talk2Face(TINY), tmp_path / "model")
    args = ["evaluate", "--checkpoint", str(tmp_path / "model"), "--shards", str(tmp_path / "shards"), "--no-meteor"]
    refused = CliRunner().invoke(cli.main, args)
    assert refused.exit_code != 0 and "shard-000001.tar" in refused.output and "Traceback" not in refused.output
    result = CliRunner().invoke(
        cli.main, args + ["--skip-bad-shards", "--out", str(tmp_path / "eval")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["faces"] == 2 and report["captions"] == {}
    assert set(report["skipped"]) == {"captions"} and "no val face has a caption" in report["skipped"]["captions"]
    assert len(report["damaged_shards_skipped"]) == 1 and "shard-000001.tar" in report["damaged_shards_skipped"][0]
    assert set(report["losses"]) == {"attributes_to_face", "face_to_attributes"}
    assert "captions: skipped, no val face has a caption" in result.output


def test_a_second_evaluate_on_the_same_out_is_refused(tmp_path):
    from common.locks import folder_lock

    write_shards(tmp_path / "shards", per_split=True)
    export(Talk2Face(TINY), tmp_path / "model")
    args = ["evaluate", "--checkpoint", str(tmp_path / "model"), "--shards", str(tmp_path / "shards"), "--split", "val"]
    with folder_lock(tmp_path / "eval", "evaluate"):  # a first run is writing there
        result = CliRunner().invoke(cli.main, [*args, "--out", str(tmp_path / "eval")], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'eval'}: another evaluate is writing there (it holds .lock); " + (
        "wait for it to finish or choose another output folder\n"
    )
    assert not (tmp_path / "eval" / "evaluation.json").exists()
