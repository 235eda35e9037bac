"""The tokenizer stage's bad inputs, one table: each is one `error:` line with exit status 2, or a
face rejected with its reason — never a traceback, never a face made up."""

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from corpus_fixture import write_corpus
from PIL import Image

import cli
from common.locks import folder_lock
from facetokens.images import try_prepare_face
from samples.tiny_vqgan import write_tiny_vqgan

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_tokens")
    corpus = write_corpus(folder, {"ffhq/00001": ("ffhq/00001.png", "RGB", (64, 64), "PNG", None)})
    vqgan = write_tiny_vqgan(folder / "vqgan")
    (folder / "a_file").write_text("x")
    (folder / "not.safetensors").write_text("this is not a safetensors file")
    (folder / "shards").mkdir()
    return {
        "folder": folder,
        "corpus": corpus,
        "config": vqgan["config"],
        "ckpt": vqgan["ckpt"],
        "file": folder / "a_file",
        "fake": folder / "not.safetensors",
        "shards": folder / "shards",
    }


CASES = [  # (command line with {placeholders}, first words of the message)
    (
        "tokenize-images --corpus {corpus} --out {file} --vqgan-config {config} --vqgan-ckpt {ckpt} --gpus 0",
        "error: --out {file}: exists and is not a folder",
    ),
    (
        "tokenize-images --corpus {corpus} --out {folder}/s --vqgan-ckpt {fake} --gpus 0",
        "error: {fake}: not a readable safetensors file",
    ),
    (
        "tokenize-images --corpus {folder} --out {folder}/s --vqgan-config {config} --vqgan-ckpt {ckpt} --gpus 0",
        "error: {folder}: no images.parquet",
    ),
    (
        "tokenize-images --corpus {corpus} --out {folder}/s --vqgan-config {config} --vqgan-ckpt {ckpt} --gpus 0 "
        "--batch-size 0",
        "error: --batch-size and --shard-size must be >= 1",
    ),
    (
        "convert-vqgan --vqgan-ckpt {fake} --out {folder}/v.safetensors",
        "error: {fake}: not a readable safetensors file",
    ),
    (
        "convert-vqgan --vqgan-config {config} --vqgan-ckpt {ckpt} --out {file}/v.safetensors",
        "error: --out {file}/v.safetensors: its folder {file}: exists and is not a folder",
    ),
    ("convert-vqgan --vqgan-config {config} --vqgan-ckpt {ckpt} --out {folder}", "error: --out {folder}: is a folder"),
    ("preview --shards {shards} --out {folder}/p --vqgan-ckpt {fake}", "error: {shards}: no shard-*.tar files"),
    (
        "preview --shards {shards} --out {folder}/p --vqgan-config {config} --vqgan-ckpt {ckpt} --samples 0",
        "error: --samples must be at least 1",
    ),
    ("demo --out {file}", "error: --out {file}: exists and is not a folder"),
]


@pytest.mark.parametrize("command, message", CASES, ids=[c[0].split()[0] + f"-{i}" for i, c in enumerate(CASES)])
def test_one_line_and_exit_2(world, command, message):
    result = CliRunner().invoke(cli.main, command.format(**world).split(), catch_exceptions=False)
    assert_one_line(result.exit_code, result.stderr, message.format(**world))


@pytest.mark.parametrize("name", ["tokenize-images", "demo"])
def test_the_real_process_prints_that_line_alone(world, name):
    """As above, in a process of its own: nothing else reaches stderr (no warning from an import, no log line)."""
    command, message = next(case for case in CASES if case[0].split()[0] == name)
    args = command.format(**world).split()
    proc = subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True, check=False)
    assert_one_line(proc.returncode, proc.stderr, message.format(**world))


def assert_one_line(status: int, stderr: str, message: str) -> None:
    assert status == 2, stderr
    assert stderr.startswith(message), stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr


def jpeg_claiming(size: int, real: int = 250, progressive: bool = False) -> bytes:
    """A real JPEG of real x real pixels whose frame header is rewritten to claim size x size."""
    pixels = np.random.default_rng(0).integers(0, 255, (real, real, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", progressive=progressive)
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5 : sof + 9] = size.to_bytes(2, "big") * 2
    return bytes(data)


@pytest.mark.parametrize(
    "data, reason",
    [
        (jpeg_claiming(12000), "corrupt"),  # header says 12000x12000, data holds 250x250: not a grey face
        (jpeg_claiming(250), None),  # the same file with its true header is a face
        (b"\xff\xd8\xff\xe0 this is not a jpeg", "corrupt"),
        (b"plain text, not an image", "not_an_image"),
    ],
)
def test_crafted_images(tmp_path, data, reason):
    path = tmp_path / "face.jpg"
    path.write_bytes(data)
    array, reject = try_prepare_face(path)
    assert (reject.reason if reject else None) == reason
    assert (array is None) == (reason is not None)


def test_a_second_run_on_the_same_shards_is_refused(world):
    out = world["folder"] / "locked"
    args = [
        "tokenize-images",
        "--corpus",
        str(world["corpus"]),
        "--out",
        str(out),
        "--vqgan-config",
        str(world["config"]),
        "--vqgan-ckpt",
        str(world["ckpt"]),
        "--gpus",
        "0",
    ]
    with folder_lock(out, "tokenize-images", name=".lock-node-0"):  # a first run of machine 0 is under way
        proc = subprocess.run(
            [sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 2 and proc.stderr.startswith(
            f"error: {out}: another tokenize-images is writing there"
        )
        other_node = subprocess.run(
            [sys.executable, str(REPO / "cli.py"), *args, "--num-nodes", "2", "--node-rank", "1"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert other_node.returncode == 0, other_node.stderr  # machine 1 of a multi-node run shares the folder
