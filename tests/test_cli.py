import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from common.errors import UserError
from converters import parse_options
from converters.commands import find_roots
from converters.fixtures import celeba

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def test_convert_prints_summary(tmp_path):
    celeba.write_sample(tmp_path / "celeba")
    result = run_cli("convert", "celeba", "--root", str(tmp_path / "celeba"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == celeba.SAMPLE_IMAGES
    assert (tmp_path / "out" / "celeba.parquet").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["convert", "nosuch", "--root", "."], "error: unknown dataset 'nosuch'; expected one of: celeba"),
        (
            ["convert", "celeba", "--root", "/nonexistent/celeba"],
            "error: celeba: dataset root /nonexistent/celeba is not a directory",
        ),
        (["convert", "celeba"], "error: convert celeba needs --root DIR"),
        (["convert", "all"], "error: convert all needs --roots DIR"),
        (["convert", "celeba", "--root", ".", "--opt", "x=1"], "error: celeba: bad option 'x=1'"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *args, "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_find_roots_by_folder_name_and_yaml(tmp_path):
    (tmp_path / "CelebA").mkdir()
    (tmp_path / "imdb-wiki").mkdir()
    (tmp_path / "notes").mkdir()
    assert {k: v[0].name for k, v in find_roots(tmp_path).items()} == {"celeba": "CelebA", "imdb_wiki": "imdb-wiki"}
    mapping = tmp_path / "roots.yaml"
    mapping.write_text("celeba: CelebA\nafad: {root: /data/afad, options: {version: lite}}\n")
    found = find_roots(mapping)
    assert found["celeba"] == (tmp_path / "CelebA", [])
    assert found["afad"] == (Path("/data/afad"), ["version=lite"])
    mapping.write_text("celebb: x\n")
    with pytest.raises(UserError, match=r"roots.yaml: unknown dataset 'celebb'"):
        find_roots(mapping)


def test_convert_all_lists_absent_datasets(tmp_path):
    celeba.write_sample(tmp_path / "roots" / "celeba")
    result = run_cli("convert", "all", "--roots", str(tmp_path / "roots"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert lines["celeba"].split()[1] == "12" and lines["celeba"].endswith("converted")
    assert lines["fs2k"].endswith("absent") and lines["celeba_dialog"].endswith("absent")
    assert "203,000" in lines["celeba"]


def test_option_parsing_is_typed():
    from dataclasses import dataclass
    from typing import Literal

    @dataclass
    class Options:
        filtered: bool = False
        padding: Literal["0.25", "1.25"] = "0.25"
        mapping: Path | None = None

    class Fake:
        name = "fake"

    Fake.Options = Options
    assert parse_options(Fake, ["filtered=true", "padding=1.25", "mapping=/x/map.txt"]) == Options(
        True, "1.25", Path("/x/map.txt")
    )
    with pytest.raises(UserError, match=r"fake: option padding='2'; expected one of 0.25, 1.25"):
        parse_options(Fake, ["padding=2"])
    with pytest.raises(UserError, match=r"fake: option filtered='maybe' is not a valid bool"):
        parse_options(Fake, ["filtered=maybe"])


def test_tokenize_images_reports_missing_checkpoint_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "cli.py"),
            "tokenize-images",
            "--corpus",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "s"),
            "--vqgan-ckpt",
            str(tmp_path / "last.ckpt"),
            "--gpus",
            "0",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
