"""serve: the web page on a tiny random model, driven in headless Chromium (playwright on the system's chromium);
the HTTP API (gradio_client) where no browser starts. The page's answers are generate's, byte for byte."""

import importlib.util
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import chromium
from click.testing import CliRunner
from PIL import Image
from train_fixture import one_thread  # noqa: F401 - an autouse fixture: the tiny model on one thread

import cli
from common.errors import UserError
from samples.tiny_vqgan import write_tiny_vqgan
from serve.app import DEFAULT_TEXT, candidate_rows
from serve.service import Service, describe, whole_number
from trainer.config import load_config
from trainer.generate import Sampling
from trainer.inference import load_session
from trainer.model import Talk2Face
from trainer.weights import export

REPO = Path(__file__).resolve().parents[1]
TINY256 = load_config("tiny").replace(image_tokens=256, seq_length=330, max_positions=340)
START_SECONDS = 90


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG whose header claims side x side pixels (over Pillow's limit as tokenize-images sets it), no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    vqgan = write_tiny_vqgan(root / "vqgan")
    torch.manual_seed(11)
    export(Talk2Face(TINY256).eval(), root / "export")
    (root / "examples").mkdir()
    face = root / "examples" / "face.png"
    Image.fromarray((np.random.default_rng(1).random((90, 70, 3)) * 255).astype(np.uint8)).save(face)
    bad = root / "bad"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (bad / "empty.png").write_bytes(b"")
    bomb_png(bad / "bomb.png")
    clip = None
    if importlib.util.find_spec("transformers"):  # the eval extra: --clip ranks by a tiny random CLIP
        from clip_fixture import save_tiny_clip

        clip = save_tiny_clip(root / "clip")
    return {
        "root": root,
        "export": root / "export",
        "config": vqgan["config"],
        "ckpt": vqgan["ckpt"],
        "face": face,
        "bad": bad,
        "clip": clip,
    }


@pytest.fixture(scope="module")
def service(files, tmp_path_factory):
    session = load_session(files["export"], vqgan_config=files["config"], vqgan_ckpt=files["ckpt"], device="cpu")
    return Service(session, tmp_path_factory.mktemp("answers"))


# ---------------------------------------------------------------------- the service, in process
def test_the_faces_answer_is_the_line_generate_writes_for_the_same_request(files, service, tmp_path):
    settings = service.sampling(2.0, 5, 0.0, 0.7, 3)  # the page's values (a slider's 2.0) as generate's flags
    assert settings == Sampling(samples=2, top_k=5, top_p=0.0, temperature=0.7, seed=3)
    answer = service.faces(DEFAULT_TEXT, settings)
    result = CliRunner().invoke(
        cli.main,
        [
            str(a)
            for a in (
                "generate",
                "--checkpoint",
                files["export"],
                "--vqgan-config",
                files["config"],
                "--vqgan-ckpt",
                files["ckpt"],
                "--prompt",
                "to_image",
                "--text",
                DEFAULT_TEXT,
                "--samples",
                2,
                "--top-k",
                5,
                "--top-p",
                0.0,
                "--temperature",
                0.7,
                "--seed",
                3,
                "--out",
                tmp_path / "gen",
            )
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert (answer.folder / "results.jsonl").read_bytes() == (tmp_path / "gen" / "results.jsonl").read_bytes()
    with zipfile.ZipFile(service.bundle(answer)) as bundle:
        assert sorted(bundle.namelist()) == ["images/00000-00.png", "images/00000-01.png", "results.jsonl"]
        assert bundle.read("images/00000-01.png") == (tmp_path / "gen" / "images" / "00000-01.png").read_bytes()


def test_attributes_rank_the_manifest_candidates(files, service):
    assert "gender" in service.keys("celeba") and service.candidates("celeba", "gender") == ["male", "female"]
    answer = service.attributes(str(files["face"]), "celeba", "gender", "male, female")
    rows = candidate_rows(answer.result["candidates"])
    assert sorted(r[0] for r in rows) == ["female", "male"] and rows[0][1] >= rows[1][1]
    assert abs(sum(float(r[2].rstrip("%")) for r in rows) - 100) < 0.2


def test_with_clip_faces_and_captions_are_ranked_and_scored(files, service):
    if files["clip"] is None:
        pytest.skip("no CLIP to rank with: transformers comes with the eval extra (pip install -e '.[eval]')")
    from trainer.clip import ClipScorer

    ranked = Service(service.session, service.workdir / "clip", clip=ClipScorer.load(files["clip"]))
    for answer in (
        ranked.faces(DEFAULT_TEXT, ranked.sampling(2, 70, 0, 1, 0)),
        ranked.caption(str(files["face"]), ranked.sampling(2, 70, 0, 1, 0)),
    ):
        assert len(answer.clip) == 2 and sorted(answer.order) == [0, 1]
        assert [answer.clip[k] for k in answer.order] == sorted(answer.clip, reverse=True)
        assert "ranked by CLIP" in describe(answer)
    with zipfile.ZipFile(ranked.bundle(answer)) as bundle:
        assert json.loads(bundle.read("clip.json"))["ranked"] == answer.order


@pytest.mark.parametrize(
    "name, reason", [("broken.jpg", "corrupt"), ("empty.png", "not an image"), ("bomb.png", "too large")]
)
def test_a_bad_upload_is_one_line_naming_it(files, service, name, reason):
    with pytest.raises(UserError, match=f"^face {re.escape(name)}: {reason}") as caught:
        service.caption(str(files["bad"] / name), service.sampling(1, 70, 0, 1, 0))
    assert "\n" not in str(caught.value)


def test_settings_out_of_range_are_refused():
    for values, field in (
        ((17, 70, 0, 1, 0), "samples 17"),
        ((0, 70, 0, 1, 0), "samples 0"),
        ((2.5, 70, 0, 1, 0), "samples 2.5"),
        ((2, -1, 0, 1, 0), "top-k -1"),
        ((2, 70, 1.5, 1, 0), "--top-p 1.5"),
        ((2, 70, 0, 0, 0), "--temperature 0"),
        ((2, 70, 0, float("nan"), 0), "temperature nan"),
    ):
        with pytest.raises(UserError, match=re.escape(field)):
            Service.sampling(*values)
    assert whole_number(4.0, "samples", 1, 16) == 4


def test_every_model_call_waits_in_one_queue_of_one(service):
    from serve.app import ServeConfig, build_app

    app = build_app(service, ServeConfig())
    calls = {f.api_name: f for f in app.fns.values() if f.api_name in ("faces", "caption", "attributes")}
    assert len(calls) == 3 and all(f.concurrency_id == "model" and f.concurrency_limit == 1 for f in calls.values())


def test_demo_serve_starts_the_page_on_the_demo_model_with_its_previewed_faces(files, tmp_path, monkeypatch):
    import serve.app
    from pipeline_demo import serve_demo

    shutil.copytree(files["export"], tmp_path / "run")  # an export folder stands in for the demo's run
    shutil.copytree(files["config"].parent, tmp_path / "vqgan")
    (tmp_path / "preview" / "images").mkdir(parents=True)
    shutil.copy(files["face"], tmp_path / "preview" / "images" / "0000-orig.png")
    rows = [{"original": "images/0000-orig.png"}, {"original": None}]
    (tmp_path / "preview" / "summary.json").write_text(json.dumps({"rows": rows}))
    started = {}
    monkeypatch.setattr(serve.app, "serve", lambda load, config, **_: started.update(session=load(), config=config))
    serve_demo(tmp_path, port=7999)
    assert started["session"].vqgan is not None and started["config"].port == 7999
    assert started["config"].host == "127.0.0.1" and "untrained demo" in started["config"].title
    assert started["config"].examples == (tmp_path / "preview" / "images" / "0000-orig.png",)


# ---------------------------------------------------------------------- the page, in a browser
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(files, cwd: Path, log: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "cli.py"),
                "serve",
                "--checkpoint",
                str(files["export"]),
                "--vqgan-config",
                str(files["config"]),
                "--vqgan-ckpt",
                str(files["ckpt"]),
                "--examples",
                str(files["face"].parent),
                "--port",
                str(port),
                "--device",
                "cpu",
                *(["--clip", str(files["clip"])] if files["clip"] else []),
            ],
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        started = re.search(r"serving .* on (http://\S+) \(temporary folder (.+)\)", log.read_text())
        if started:
            return proc, started.group(1), Path(started.group(2))
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    proc.kill()
    raise AssertionError(f"the server did not start:\n{log.read_text()}")


def test_the_page_draws_captions_and_reads_attributes_and_survives_a_bad_upload(files, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc, url, workdir = start_server(files, cwd, tmp_path / "server.log")
    try:
        assert url.startswith("http://127.0.0.1:")
        no_browser = drive_browser(url, files, tmp_path)
        if no_browser:
            drive_api(url, files, tmp_path)
        assert proc.poll() is None, "the server stopped"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not workdir.exists(), "the temporary folder outlived the server"
    assert list(cwd.iterdir()) == [], "the server wrote into its working folder"
    if no_browser:
        pytest.skip(f"no browser could start ({no_browser}): checked the page's HTTP API with gradio_client instead")


def drive_browser(url: str, files, tmp_path: Path) -> str | None:
    """Every tab in headless Chromium; returns why no browser started (None when it ran)."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as e:
        return f"playwright is not installed: {e}"
    executable = chromium()
    if executable is None:
        return "no Chromium on this machine (scripts/install.sh installs Debian's `chromium` when run as root)"
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Error as e:
            return f"Chromium did not start: {str(e).splitlines()[0]}"
        try:
            page = browser.new_page(accept_downloads=True)
            page.goto(url)
            page_faces(page, files, tmp_path)
            page_caption(page)
            page_attributes(page, files)
        finally:
            browser.close()
    return None


def page_faces(page, files, tmp_path: Path) -> None:
    page.fill("#faces-samples input[type=number]", "2")
    page.press("#faces-samples input[type=number]", "Enter")
    page.fill("#faces-top-k input", "-1")  # out of range: one line in the page
    page.click("#faces-run")
    page.get_by_text("top-k -1: expected a whole number, 0 or more").first.wait_for(timeout=30_000)
    page.fill("#faces-top-k input", "70")
    page.click("#faces-run")
    page.wait_for_function("document.querySelectorAll('#faces-gallery img').length >= 2", timeout=60_000)
    with page.expect_download() as download:
        page.click("#faces-download")
    saved = tmp_path / "faces.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as bundle:
        [line] = [json.loads(x) for x in bundle.read("results.jsonl").decode().splitlines()]
    assert line["text"] == DEFAULT_TEXT and len(line["samples"]) == 2
    if files["clip"]:
        labels = page.locator("#faces-gallery .caption-label").all_inner_texts()
        assert len(labels) == 2 and all(re.search(r"\(CLIP -?\d+\.\d{3}\)", label) for label in labels), labels


def table_rows(element: str) -> str:
    """JavaScript for the number of data rows a gr.Dataframe shows (its grid's aria-rowcount, less the header)."""
    return f"Number(document.querySelector('#{element} [role=grid]')?.getAttribute('aria-rowcount') || 1) - 1"


def page_caption(page) -> None:
    page.get_by_role("tab", name="Face → caption").click()
    page.locator("#tab-caption").get_by_text("face.png").first.click()  # the example face
    page.fill("#caption-samples input[type=number]", "2")
    page.press("#caption-samples input[type=number]", "Enter")
    page.click("#caption-run")
    page.wait_for_function(f"{table_rows('caption-table')} === 2", timeout=60_000)
    page.wait_for_selector("#caption-seen img")


def page_attributes(page, files) -> None:
    page.get_by_role("tab", name="Face → attributes").click()
    upload = page.locator("#attributes-face input[type=file]")
    upload.set_input_files(str(files["face"]))
    candidates = page.input_value("#attributes-candidates textarea")
    expected = len([c for c in candidates.split(",") if c.strip()])
    assert expected >= 2, candidates
    rows = table_rows("attributes-table")
    page.click("#attributes-run")
    page.wait_for_function(f"{rows} === {expected}", timeout=60_000)
    page.locator("#attributes-face button[aria-label='Clear']").first.click()
    upload.set_input_files(str(files["bad"] / "broken.jpg"))
    page.click("#attributes-run")
    page.get_by_text("face broken.jpg: corrupt").first.wait_for(timeout=30_000)
    page.locator("#attributes-face button[aria-label='Clear']").first.click()
    upload.set_input_files(str(files["face"]))
    page.click("#attributes-dataset input")  # another dataset: its key and its values from the manifest
    page.get_by_role("option", name="affectnet").click()
    page.wait_for_function("document.querySelector('#attributes-candidates textarea').value.includes('contempt')")
    page.click("#attributes-run")  # the next request still works: affectnet's eight expressions ranked
    page.wait_for_function(f"{rows} === 8", timeout=60_000)


def drive_api(url: str, files, tmp_path: Path) -> None:
    """The same three requests and the bad upload through the HTTP API."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
    gallery, _, _ = client.predict(DEFAULT_TEXT, 2, 70, 0, 1, 0, api_name="/faces")
    assert len(gallery) == 2
    _, captions, _ = client.predict(handle_file(str(files["face"])), 2, 70, 0, 1, 0, api_name="/caption")
    assert len(captions["data"]) == 2
    value, table = client.predict(
        handle_file(str(files["face"])), "celeba", "gender", "male, female", api_name="/attributes"
    )
    assert isinstance(value, str) and len(table["data"]) == 2
    with pytest.raises(AppError, match="face broken.jpg: corrupt"):
        client.predict(handle_file(str(files["bad"] / "broken.jpg")), 2, 70, 0, 1, 0, api_name="/caption")
    assert len(client.predict(DEFAULT_TEXT, 1, 70, 0, 1, 0, api_name="/faces")[0]) == 1
