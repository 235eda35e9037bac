"""The GPU proof's dry run: every section's code path on the CPU at tiny sizes, so the script never rots."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_proof_dry_run_passes_every_section_and_writes_its_table(tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_proof.py", "--dry-run", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu-proof.json").read_text())
    assert result["meta"]["dry_run"] is True
    assert {name: s["status"] for name, s in result["sections"].items()} == dict.fromkeys(
        ["tests", "tokenize", "train", "generate", "ddp"], "ok"
    )
    assert "skipped" in result["sections"]["tests"]["summary"]  # no CUDA here: every GPU test skips, none fails
    assert result["sections"]["tokenize"]["faces"] == 8
    assert result["sections"]["ddp"]["steps_logged"] == [1, 2, 3, 4]
    assert "GPU proof on CPU" in done.stdout


def test_the_full_proof_refuses_to_start_without_cuda_in_one_line():
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_proof.py", "--out", "/nonexistent"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--dry-run" in done.stderr
