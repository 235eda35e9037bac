"""The demo end to end at its smallest size, and its report opened in a real browser."""

import json
import shutil

import numpy as np
import pytest
from browser import chromium, images_as_loaded, local_links
from click.testing import CliRunner
from PIL import Image

import cli
from pipeline_demo import run_demo
from pipeline_demo.report import REPORT_FILE

STAGES = [
    "sample datasets",
    "convert all",
    "build-corpus",
    "tokenize-images",
    "preview",
    "train",
    "generate",
    "evaluate",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`python3 cli.py demo` at its smallest size (4 training steps)."""
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(cli.main, ["demo", "--out", str(out), "--train-steps", "4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1] == f"open {out / REPORT_FILE}"
    return out, out / REPORT_FILE, lines


def test_every_converter_and_corpus_file(demo):
    out, _, lines = demo
    assert not any("absent" in line or "failed" in line for line in lines)
    assert (out / "corpus" / "images.parquet").exists() and (out / "corpus" / "STATS.md").exists()
    assert list((out / "shards" / "train").glob("shard-*.tar")) and (out / "preview" / "index.html").exists()
    assert "rejects" in json.loads((out / "shards" / "index.json").read_text())


def test_every_stage_runs_and_reports_its_counts(demo):
    out, page, lines = demo
    assert page == out / REPORT_FILE and page.is_file()
    stages = json.loads((out / "stages.json").read_text())
    assert [s["stage"] for s in stages] == STAGES
    results = {s["stage"]: s["result"] for s in stages}
    assert results["convert all"].endswith("from 13 datasets")
    assert "126 faces in" in results["tokenize-images"]
    assert results["train"].startswith("4 steps")
    assert any(line.startswith("== evaluate") for line in lines)


def test_generated_face_caption_and_attribute(demo):
    out, _, _ = demo
    results = [json.loads(line) for line in (out / "generated" / "results.jsonl").read_text().splitlines()]
    by_prompt = {r["prompt"]: r for r in results}
    face = Image.open(out / "generated" / by_prompt["to_image"]["samples"][0]["image"])
    assert face.size == (256, 256) and np.asarray(face).std() > 0
    assert all(len(s["tokens"]) == 256 for s in by_prompt["to_image"]["samples"])
    assert all(s["text"].strip() for s in by_prompt["to_caption"]["samples"])
    assert by_prompt["to_attributes"]["samples"][0]["value"] is not None


def test_evaluation_table_and_loss_curve(demo):
    out, _, _ = demo
    assert "BLEU" in (out / "evaluation" / "evaluation.md").read_text()
    assert (out / "run" / "loss.png").is_file()


def test_rerun_reuses_finished_stages(demo, tmp_path):
    out = tmp_path / "demo"  # a copy: the other tests read the first run's files, in whatever order they run
    shutil.copytree(demo[0], out)
    lines: list[str] = []
    run_demo(out, train_steps=4, echo=lines.append)
    reused = [lines[i - 1] for i, line in enumerate(lines) if "reused" in line]
    assert reused == [f"== {stage} ..." for stage in STAGES]  # nothing changed: every stage is reused


def test_report_in_a_browser(demo):
    out, page, _ = demo
    for target in local_links(page):
        assert (out / target).is_file(), f"broken link {target}"
    browser = chromium()
    if browser is None:  # install.sh installs Debian's chromium; without it, check that every picture decodes
        for target in local_links(page):
            Image.open(out / target).verify()
        pytest.skip(
            "no Chromium on this machine (scripts/install.sh installs Debian's `chromium` when run as root "
            "with apt): every picture and link of the report was checked to exist and decode, but the page "
            "was not opened in a browser"
        )
    images = images_as_loaded(page, browser)
    assert len(images) >= 20
    assert [i["src"] for i in images if i["width"] == 0] == []
