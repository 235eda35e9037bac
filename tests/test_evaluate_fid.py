"""evaluate --fid (Table 2: FID/IS, CLIP score) end to end on tiny models, METEOR's place in the report, the
paper's rows, and evaluate's refusals (before any model loads)."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from clip_fixture import save_tiny_clip
from PIL import Image
from test_evaluate import face
from test_generate import run_cli
from test_generate_clip import write_model_files
from train_fixture import one_thread  # noqa: F401 - an autouse fixture: the tiny models on one thread

from corpus import layout
from facetokens.shards import sample, write_shard
from samples.random_inception import write_random_inception
from trainer.evaluate import paper_rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny model + VQGAN, val shards whose faces have captions, their corpus originals, Inception, CLIP."""
    root = tmp_path_factory.mktemp("fid")
    model_files = write_model_files(root, seed=3)
    faces = [face(n, "val") for n in range(4)]
    rng = np.random.default_rng(0)
    (root / "shards" / "val").mkdir(parents=True)
    write_shard(root / "shards" / "val", 0, [sample(f, rng.integers(0, 1024, 256)) for f in faces], [], 0, 4)
    corpus = root / "corpus"
    (corpus / "photos").mkdir(parents=True)
    kept = faces[:3]  # the fourth face's original is not in the corpus: counted, not dropped
    for n, f in enumerate(kept):
        Image.fromarray((rng.random((80 + 10 * n, 70, 3)) * 255).astype(np.uint8)).save(corpus / "photos" / f.image)
    # the corpus layout build-corpus writes: images.parquet without `path`, roots.yaml saying where the files are
    layout.write_images(
        corpus,
        pa.table(
            {
                "image_id": [f.image_id for f in kept],
                "dataset": [f.dataset for f in kept],
                "image": [f.image for f in kept],
                "box": [None] * len(kept),
                "split": [f.split for f in kept],
            },
            schema=layout.STORED_IMAGE_SCHEMA,
        ),
    )
    layout.write_roots({"celeba": "photos"}, corpus)  # relative: taken from the corpus folder
    return {
        "root": root,
        "vq": model_files,
        "inception": write_random_inception(root / "inception.pth"),
        "clip": save_tiny_clip(root / "clip"),
    }


def evaluate_args(s, *extra):
    r = s["root"]
    return [
        "evaluate",
        "--checkpoint",
        r / "export",
        "--vqgan-config",
        s["vq"]["config"],
        "--vqgan-ckpt",
        s["vq"]["ckpt"],
        "--shards",
        r / "shards",
        "--split",
        "val",
        "--no-meteor",
        *extra,
    ]


def test_fid_is_and_clip_score_with_counts_beside_the_paper(setup, tmp_path):
    result = run_cli(
        *evaluate_args(
            setup,
            "--fid",
            "--fid-samples",
            4,
            "--inception-weights",
            setup["inception"],
            "--corpus",
            setup["root"] / "corpus",
            "--clip",
            setup["clip"],
            "--out",
            tmp_path,
        )
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "evaluation.json").read_text())
    synthesis = report["synthesis"]
    assert synthesis["generated"] == 4 and synthesis["texts"] == 4 and synthesis["real"] == 3
    assert synthesis["real_skipped"] == {"not_in_corpus": 1}
    assert np.isfinite(synthesis["fid"]) and synthesis["fid"] >= 0 and synthesis["is_mean"] >= 1.0
    assert synthesis["clip_faces"] == 4 and np.isfinite(synthesis["clip_score"])
    rows = {(r["table"], r["metric"]): r for r in report["paper"]}
    fid_row = rows[("Table 2", "FID (1,000 generated vs the validation split)")]
    assert fid_row["ours"] == synthesis["fid"] and fid_row["paper"] == 104.9
    assert fid_row["count"] == "4 generated / 3 real"
    assert rows[("Table 3", "METEOR")]["why_not"] == "not asked"
    table = (tmp_path / "evaluation.md").read_text()
    assert f"| FID | {synthesis['fid']:.2f} | 4 | 3 |" in table and "biased upward" in table
    assert "| Table 2 | text-guided face synthesis | user study: quality (1-5) | n/a (a user study) |" in table


def test_library_inception_with_random_weights_in_the_real_format(setup):
    from trainer import fid

    network = fid.load_inception(setup["inception"])
    faces = [(np.random.default_rng(i).random((256, 256, 3)) * 255).astype(np.uint8) for i in range(2)]
    got = fid.extract(network, faces)
    assert got.pool.shape == (2, 2048) and got.logits.shape == (2, 1008) and got.pool.dtype == torch.float64
    assert torch.isfinite(got.pool).all() and (got.pool[0] - got.pool[1]).abs().max() > 0  # faces differ
    assert torch.allclose(fid.extract(network, faces[:1]).pool[0], got.pool[0], atol=1e-5)  # batch-independent


def test_paper_rows_cover_tables_2_to_5_and_say_why_a_row_is_missing():
    rows = paper_rows(
        {},
        {
            "celeba_text_hq": {
                "faces": 2,
                "bleu4": 0.25,
                "rouge_l": 0.5,
                "cider": 0.1,
                "meteor": None,
                "meteor_missing": "needs Java",
            }
        },
    )
    assert {r["table"] for r in rows} == {"Table 2", "Table 3", "Table 4", "Table 5"}
    assert all(r["paper"] is not None for r in rows)
    by_metric = {(r["table"], r["metric"]): r for r in rows}
    assert by_metric[("Table 3", "BLEU-4")]["ours"] == pytest.approx(25.0)
    assert by_metric[("Table 3", "CIDEr")]["ours"] == pytest.approx(10.0)  # percent-style, as the paper prints
    assert (
        by_metric[("Table 3", "METEOR")]["ours"] is None and by_metric[("Table 3", "METEOR")]["why_not"] == "needs Java"
    )
    assert by_metric[("Table 2", "IS")]["why_not"] == "needs --fid"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--limit", "0"], "--limit 0: need at least 1"),
        (["--limit", "-1"], "--limit -1: need at least 1"),
        (["--batch-size", "0"], "--batch-size 0"),
        (["--fid"], "--fid needs the VQGAN"),
        (["--fid", "--vqgan-ckpt", "v.ckpt"], "--fid needs --inception-weights FILE; download https://"),
        (
            ["--fid", "--vqgan-ckpt", "v.ckpt", "--inception-weights", "nowhere.pth"],
            "--inception-weights nowhere.pth: not found; download",
        ),
        (["--fid", "--vqgan-ckpt", "v.ckpt", "--fid-samples", "1", "--inception-weights", "x"], "--fid-samples 1"),
        (["--clip", "somewhere"], "--clip and --inception-weights apply with --fid"),
        (["--device", "tpu"], "--device 'tpu'"),
    ],
)
def test_evaluate_refuses_in_one_line_before_loading(tmp_path, extra, message):
    result = run_cli("evaluate", "--checkpoint", tmp_path / "no-model", "--shards", tmp_path, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1, result.output
