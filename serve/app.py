"""The Gradio page: three tabs over one `Service`, one model call at a time (Gradio's queue, concurrency 1).

    python3 cli.py serve --checkpoint run/ --vqgan-ckpt vqgan.safetensors [--clip DIR] [--host 127.0.0.1 --port 7860]

A user error (an upload that is not an image, a decompression bomb, 0 bytes; a setting out of range) is
raised as `gr.Error`: one line in the page, and the server goes on. Gradio keeps its uploads and copies
under the server's temporary folder (GRADIO_TEMP_DIR, set before Gradio is imported), removed at exit.
"""

from __future__ import annotations

import functools
import html
import importlib.util
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError, first_line
from serve import DEFAULT_HOST, DEFAULT_PORT
from serve.service import MAX_SAMPLES, Service, describe, load_clip
from trainer.generate import Sampling

ONE_AT_A_TIME = {"concurrency_limit": 1, "concurrency_id": "model"}  # every model call shares one slot of the queue
MAX_UPLOAD = "25mb"
EXAMPLE_FACES = 8
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
DEFAULT_TEXT = "celeba gender: female; smiling: true; black hair: true"


@dataclass(frozen=True)
class ServeConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    examples: tuple[Path, ...] = ()  # example faces for the caption and attribute tabs
    title: str = "Talk2Face"
    note: str = ""  # a line under the title, e.g. that this is the untrained demo model


def example_faces(folder: Path | None, limit: int = EXAMPLE_FACES) -> tuple[Path, ...]:
    """The first image files of `folder` (by name), for the example lists."""
    if folder is None:
        return ()
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--examples {folder}: not a folder")
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise UserError(f"--examples {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return tuple(found[:limit])


def in_page(fn: Callable) -> Callable:
    """A UserError (or a refused file operation) as a one-line gr.Error in the page, never a traceback."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args):
        try:
            return fn(*args)
        except UserError as e:
            raise gr.Error(html.escape(first_line(e, limit=400)), print_exception=False) from None
        except OSError as e:
            raise gr.Error(html.escape(f"{e.filename or 'file'}: {e.strerror or e}"), print_exception=False) from None

    return wrapper


def _sampling_controls(samples: int, prefix: str) -> list:
    import gradio as gr

    defaults = Sampling()
    with gr.Row():
        return [
            gr.Slider(1, MAX_SAMPLES, value=samples, step=1, label="samples", elem_id=f"{prefix}-samples"),
            gr.Number(defaults.top_k, label="top-k (0 = off)", precision=0, elem_id=f"{prefix}-top-k"),
            gr.Slider(0.0, 1.0, value=defaults.top_p, step=0.01, label="top-p (0 = off)", elem_id=f"{prefix}-top-p"),
            gr.Slider(
                0.05, 2.0, value=defaults.temperature, step=0.05, label="temperature", elem_id=f"{prefix}-temperature"
            ),
            gr.Number(defaults.seed, label="seed", precision=0, elem_id=f"{prefix}-seed"),
        ]


def _scored(answer, label: Callable[[dict], str]) -> list[tuple[int, str]]:
    """(sample index, its label with the CLIP score where ranked), best first."""
    return [
        (k, label(answer.result["samples"][k]) + (f"  (CLIP {answer.clip[k]:.3f})" if answer.clip else ""))
        for k in answer.ranked()
    ]


def _faces_tab(service: Service) -> None:
    import gradio as gr

    text = gr.Textbox(DEFAULT_TEXT, label="text (a caption or attributes)", lines=2, elem_id="faces-text")
    settings = _sampling_controls(8, "faces")
    run = gr.Button("Draw faces", variant="primary", elem_id="faces-run")
    gallery = gr.Gallery(label="faces", columns=4, height="auto", format="png", elem_id="faces-gallery")
    status = gr.Markdown(elem_id="faces-status")
    download = gr.DownloadButton("Download (faces + results.jsonl)", visible=False, elem_id="faces-download")

    @in_page
    def draw(words, *values):
        answer = service.faces(words, service.sampling(*values))
        shown = [
            (str(answer.folder / answer.result["samples"][k]["image"]), caption)
            for k, caption in _scored(answer, lambda s: s["image"].split("/")[-1])
        ]
        return shown, describe(answer), gr.DownloadButton(value=str(service.bundle(answer)), visible=True)

    run.click(draw, [text, *settings], [gallery, status, download], **ONE_AT_A_TIME, api_name="faces")


def _face_input(config: ServeConfig, prefix: str):
    import gradio as gr

    face = gr.File(label="face (upload an image)", file_types=["image"], type="filepath", elem_id=f"{prefix}-face")
    if config.examples:
        gr.Examples([[str(p)] for p in config.examples], [face], label="example faces", cache_examples=False)
    return face


def _caption_tab(service: Service, config: ServeConfig) -> None:
    import gradio as gr

    with gr.Row():
        with gr.Column():
            face = _face_input(config, "caption")
            settings = _sampling_controls(4, "caption")
            run = gr.Button("Write captions", variant="primary", elem_id="caption-run")
        with gr.Column():
            seen = gr.Image(
                label="the face as the model reads it", interactive=False, format="png", elem_id="caption-seen"
            )
            captions = gr.Dataframe(headers=["caption"], label="captions", interactive=False, elem_id="caption-table")
            status = gr.Markdown(elem_id="caption-status")

    @in_page
    def write(upload, *values):
        answer = service.caption(upload, service.sampling(*values))
        rows = [[label] for _, label in _scored(answer, lambda s: s["text"] or "(empty: the model ended at once)")]
        return service.seen_face(upload), rows, describe(answer)

    run.click(write, [face, *settings], [seen, captions, status], **ONE_AT_A_TIME, api_name="caption")


def _attributes_tab(service: Service, config: ServeConfig) -> None:
    import gradio as gr

    datasets = sorted(service.vocabularies)
    first = datasets[0] if datasets else None
    first_key = next(iter(service.keys(first)), None)
    with gr.Row():
        with gr.Column():
            face = _face_input(config, "attributes")
            dataset = gr.Dropdown(datasets, value=first, label="dataset", elem_id="attributes-dataset")
            key = gr.Dropdown(
                service.keys(first), value=first_key, label="key", allow_custom_value=True, elem_id="attributes-key"
            )
            candidates = gr.Textbox(
                ", ".join(service.candidates(first, first_key)),
                label="candidates (comma-separated)",
                elem_id="attributes-candidates",
            )
            run = gr.Button("Read the attribute", variant="primary", elem_id="attributes-run")
        with gr.Column():
            value = gr.Textbox(label="greedy value", interactive=False, elem_id="attributes-value")
            table = gr.Dataframe(
                headers=["candidate", "log-likelihood", "share"],
                label="candidates, most likely first",
                interactive=False,
                elem_id="attributes-table",
            )

    def keys_of(name):
        keys = service.keys(name)
        chosen = keys[0] if keys else None
        return gr.Dropdown(choices=keys, value=chosen), ", ".join(service.candidates(name, chosen))

    dataset.change(keys_of, [dataset], [key, candidates], queue=False)
    key.change(lambda name, k: ", ".join(service.candidates(name, k)), [dataset, key], [candidates], queue=False)

    @in_page
    def read(upload, name, chosen, listed):
        answer = service.attributes(upload, name, chosen, listed)
        return answer.result["samples"][0]["value"], candidate_rows(answer.result.get("candidates") or {})

    run.click(read, [face, dataset, key, candidates], [value, table], **ONE_AT_A_TIME, api_name="attributes")


def candidate_rows(scores: dict[str, float]) -> list[list]:
    """[candidate, log-likelihood, share of the candidates' total probability], most likely first."""
    import math

    if not scores:
        return []
    top = max(scores.values())
    total = sum(math.exp(v - top) for v in scores.values())
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    return [[name, round(v, 4), f"{math.exp(v - top) / total:.1%}"] for name, v in ranked]


def build_app(service: Service, config: ServeConfig):
    import gradio as gr

    with gr.Blocks(title=config.title, delete_cache=(600, 3600)) as app:
        gr.Markdown(f"# {html.escape(config.title)}\n{html.escape(config.note)}")
        with gr.Tab("Text → faces", elem_id="tab-faces"):
            _faces_tab(service)
        with gr.Tab("Face → caption", elem_id="tab-caption"):
            _caption_tab(service, config)
        with gr.Tab("Face → attributes", elem_id="tab-attributes"):
            _attributes_tab(service, config)
    app.queue(default_concurrency_limit=1)
    return app


def serve(
    load: Callable[[], object], config: ServeConfig, clip: Path | None = None, echo: Callable[[str], None] = print
) -> None:
    """Load the model once (`load()` returns the session), start the page, block until interrupted; the
    temporary folder is removed at exit."""
    if importlib.util.find_spec("gradio") is None:
        raise UserError("serve needs Gradio: bash scripts/install.sh, or pip install -e '.[serve]'")
    workdir = Path(tempfile.mkdtemp(prefix="talk2face-serve-"))
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # a terminated server still removes its temporary folder
    try:
        session = load()
        service = Service(session, workdir / "answers", clip=load_clip(clip, str(session.device)))
        app = build_app(service, config)
        try:
            app.launch(
                server_name=config.host,
                server_port=config.port,
                show_error=True,
                max_file_size=MAX_UPLOAD,
                allowed_paths=[str(p) for p in config.examples],
                prevent_thread_lock=True,
                quiet=True,
            )
        except OSError:
            raise UserError(
                f"--host {config.host} --port {config.port}: cannot listen there (is another server "
                "on it?); choose another --port"
            ) from None
        echo(f"serving {service.session.checkpoint} on http://{config.host}:{config.port} (temporary folder {workdir})")
        app.block_thread()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
