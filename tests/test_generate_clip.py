"""generate --clip/--keep with a tiny random CLIP, and generation input checked before any model work (a table)."""

import json
from dataclasses import dataclass

import pytest
from clip_fixture import save_tiny_clip
from test_generate import TINY256, read_results, run_cli, vqgan_args

from common.errors import UserError
from trainer.generate import MAX_ROWS, Request, Sampling, check_plan
from trainer.model import Talk2Face
from trainer.weights import export


def write_model_files(root, seed: int = 7) -> dict:
    """A tiny model at the tiny VQGAN's grid exported to ROOT/export; the VQGAN; one face (ROOT/face.png)."""
    import numpy as np
    import torch
    from PIL import Image

    from samples.tiny_vqgan import write_tiny_vqgan

    vq = write_tiny_vqgan(root / "vqgan")
    torch.manual_seed(seed)
    export(Talk2Face(TINY256).eval(), root / "export")
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(root / "face.png")
    return {"root": root, "config": vq["config"], "ckpt": vq["ckpt"], "face": root / "face.png"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_model_files(tmp_path_factory.mktemp("generate-clip"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


def generate(files, out, *args):
    return run_cli("generate", "--checkpoint", files["root"] / "export", *vqgan_args(files), "--out", out, *args)


def test_to_image_samples_ranked_by_clip_best_kept_and_every_score_recorded(files, clip_dir, tmp_path):
    long_text = "This man has black hair. " * 30  # > 77 CLIP tokens; the model's own prompt is cut as usual
    result = generate(
        files,
        tmp_path / "o",
        "--prompt",
        "to_image",
        "--text",
        long_text,
        "--samples",
        3,
        "--clip",
        clip_dir,
        "--keep",
        2,
    )
    assert result.exit_code == 0, result.output
    [line] = read_results(tmp_path / "o")
    scores = [s["clip_score"] for s in line["samples"]]
    assert len(scores) == 3 and sorted(line["kept"], key=lambda i: -scores[i]) == line["kept"]
    assert [s["kept"] for s in line["samples"]].count(True) == 2
    assert scores[line["kept"][-1]] >= max(s for i, s in enumerate(scores) if i not in line["kept"])
    assert sorted(s["clip_rank"] for s in line["samples"]) == [1, 2, 3]
    assert line["clip_truncated"] is True
    assert "kept 2 of 3 by CLIP; the text was cut at CLIP's 77 tokens" in result.output
    assert all((tmp_path / "o" / s["image"]).is_file() for s in line["samples"])  # every sample is still written


def test_requests_carry_their_own_keep_and_captions_are_ranked_against_the_face(files, clip_dir, tmp_path):
    lines = [
        {"prompt": "to_caption", "image": str(files["face"]), "keep": 1},
        {"prompt": "to_image", "text": "a smiling woman"},
        {"prompt": "to_attributes", "image": str(files["face"]), "attribute": "gender"},
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    result = generate(files, tmp_path / "o", "--requests", tmp_path / "r.jsonl", "--samples", 2, "--clip", clip_dir)
    assert result.exit_code == 0, result.output
    caption, image, attributes = read_results(tmp_path / "o")
    assert len(caption["kept"]) == 1 and all("clip_score" in s for s in caption["samples"])
    assert len(image["kept"]) == 2  # no --keep: all kept, ranked
    assert "kept" not in attributes and "clip_score" not in attributes["samples"][0]


@dataclass
class Case:
    args: list  # after `generate --checkpoint <missing> --out <tmp>`
    message: str
    requests: list | None = None  # lines of a requests file, given as --requests


CASES = {
    "temperature nan": Case(["--prompt", "to_image", "--text", "x", "--temperature", "nan"], "--temperature nan"),
    "temperature inf": Case(["--prompt", "to_image", "--text", "x", "--temperature", "inf"], "--temperature inf"),
    "top-p nan": Case(["--prompt", "to_image", "--text", "x", "--top-p", "nan"], "--top-p nan"),
    "bad device name": Case(["--prompt", "to_image", "--text", "x", "--device", "gpu0"], "--device 'gpu0'"),
    "cuda without CUDA": Case(["--prompt", "to_image", "--text", "x", "--device", "cuda"], "use --device cpu"),
    "samples past the ceiling": Case(
        ["--prompt", "to_image", "--text", "x", "--samples", MAX_ROWS + 1], f"at most {MAX_ROWS:,}"
    ),
    "keep without clip": Case(["--prompt", "to_image", "--text", "x", "--keep", 2], "keep 2 needs --clip"),
    "keep zero": Case(["--prompt", "to_image", "--text", "x", "--keep", 0], "--keep 0"),
    "no prompt on a line": Case([], ":2: no prompt", [{"prompt": "to_image", "text": "x"}, {"text": "y"}]),
    "candidates a number": Case(
        [],
        ":1: candidates must be a list",
        [{"prompt": "to_attributes", "image": "f.png", "attribute": "a", "candidates": 5}],
    ),
    "candidates an object": Case(
        [],
        ":1: candidates must be a list",
        [{"prompt": "to_attributes", "image": "f.png", "attribute": "a", "candidates": {"a": "b"}}],
    ),
    "keep text": Case([], ":1: keep '2'", [{"prompt": "to_image", "text": "x", "keep": "2"}]),
    "keep on attributes": Case(
        [],
        "keep applies to to_image and to_caption",
        [{"prompt": "to_attributes", "image": "FACE", "attribute": "a", "keep": 1}],
    ),
    "missing face": Case([], ":1: cannot read the face", [{"prompt": "to_caption", "image": "nowhere.png"}]),
    "too many rows": Case(
        ["--samples", MAX_ROWS // 2 + 1],
        "rows: at most",
        [{"prompt": "to_image", "text": "x"}, {"prompt": "to_image", "text": "y"}],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_generation_input_is_refused_in_one_line_before_the_model_loads(files, tmp_path, name, monkeypatch):
    import torch

    case = CASES[name]
    if name == "cuda without CUDA":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = list(case.args)
    if case.requests is not None:
        text = "\n".join(json.dumps(r).replace('"FACE"', json.dumps(str(files["face"]))) for r in case.requests)
        (tmp_path / "r.jsonl").write_text(text)
        args += ["--requests", tmp_path / "r.jsonl"]
    # a checkpoint that does not exist: the refusal must come before anything loads it
    result = run_cli("generate", "--checkpoint", tmp_path / "no-model", "--out", tmp_path / "o", *args)
    assert result.exit_code == 2, result.output
    assert case.message in result.output and result.output.count("\n") == 1, result.output
    assert "checkpoint not found" not in result.output


def test_check_plan_counts_rows():
    requests = [Request("to_image", text="x"), Request("to_attributes", image=__file__, attribute="a")]
    assert check_plan(requests, Sampling(samples=3)) == 4
    with pytest.raises(UserError, match="keep 4 is more than the 3"):
        check_plan([Request("to_image", text="x", keep=4)], Sampling(samples=3), clip=True)


def test_missing_clip_folder_is_one_line(files, tmp_path):
    result = generate(files, tmp_path / "o", "--prompt", "to_image", "--text", "x", "--clip", tmp_path / "none")
    assert result.exit_code == 2 and "--clip" in result.output and "not a folder" in result.output
    assert result.output.count("\n") == 1
