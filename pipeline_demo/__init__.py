"""The built-in demo: the whole pipeline, end to end, on sample data written in each dataset's real format.

    python cli.py demo --out demo-run/            # re-running reuses finished stages; --fresh starts over

samples -> convert all -> build-corpus -> tokenize-images (tiny random VQGAN, real checkpoint format)
-> preview -> train (tiny model, CPU) -> generate (a face, a caption, an attribute) -> evaluate (val)
-> OUT/report.html. Each stage prints its counts and time.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from common.fileio import output_folder, write_json
from converters import DATASETS
from converters.fixtures import writer

TRAIN_STEPS = 120  # about 2 minutes of the 2-core CPU; the loss falls from 10.4 to about 7
PREVIEW_FACES = 8


def available_datasets() -> list[str]:
    """Datasets whose converter and fixture writer are both present."""
    return [
        n
        for n in DATASETS
        if importlib.util.find_spec(f"converters.datasets.{n}") and importlib.util.find_spec(f"converters.fixtures.{n}")
    ]


def write_samples(root: Path) -> list[str]:
    names = available_datasets()
    for name in names:
        writer(name).write_sample(root / name)
    return names


class Stages:
    """Runs the stages in order, each timed and announced. A stage finished by an earlier run is reused,
    unless a stage before it had to run again (its inputs may have changed)."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo, self.done, self.ran = echo, [], False

    def run(self, name: str, work: Callable[[], str], finished: bool = False) -> None:
        self.echo(f"== {name} ...")
        start = time.perf_counter()
        reuse = finished and not self.ran
        self.ran |= not reuse
        detail = "reused (finished earlier)" if reuse else work()
        seconds = time.perf_counter() - start
        self.done.append((name, detail, seconds))
        self.echo(f"   {detail}  [{seconds:.1f} s]")


def run_demo(
    out: Path, *, fresh: bool = False, train_steps: int = TRAIN_STEPS, echo: Callable[[str], None] = print
) -> Path:
    """Run every stage into `out` and write `out/report.html`; returns the report's path."""
    from converters.commands import convert_all, format_table
    from converters.helpers.converted import is_converted
    from corpus.build import build_corpus
    from corpus.layout import is_complete
    from facetokens.config import TokenizeConfig
    from facetokens.preview import preview
    from facetokens.shards import INDEX_FILE
    from facetokens.tokenize_images import tokenize_images
    from samples.tiny_vqgan import write_tiny_vqgan

    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    out = output_folder(out)
    stages = Stages(echo)
    paths = {
        name: out / name
        for name in ("datasets", "converted", "corpus", "vqgan", "shards", "preview", "run", "generated", "evaluation")
    }
    stages.run(
        "sample datasets",
        lambda: f"{len(write_samples(paths['datasets']))} datasets in their real formats",
        finished=(paths["datasets"] / ".complete").is_file(),
    )
    (paths["datasets"] / ".complete").touch()

    def convert() -> str:
        results = convert_all(paths["datasets"], paths["converted"])
        echo(format_table(results))
        return f"{sum(r.get('rows', 0) or 0 for r in results):,} rows from {len(results)} datasets"

    stages.run("convert all", convert, finished=all(is_converted(paths["converted"], n) for n in available_datasets()))

    def corpus() -> str:
        stats = build_corpus(paths["converted"], paths["corpus"], progress=True)
        return f"{stats['corpus']['pairs']:,} pairs, {stats['corpus']['images']:,} images"

    stages.run("build-corpus", corpus, finished=is_complete(paths["corpus"]))

    vqgan = {"config": paths["vqgan"] / "project.yaml", "ckpt": paths["vqgan"] / "last.ckpt"}
    if not vqgan["ckpt"].is_file():
        vqgan = write_tiny_vqgan(paths["vqgan"])  # randomly initialised: the real FFHQ weights cannot ship

    def tokenize() -> str:
        s = tokenize_images(
            paths["corpus"],
            paths["shards"],
            vqgan_config=vqgan["config"],
            vqgan_ckpt=vqgan["ckpt"],
            config=TokenizeConfig(gpus=0, batch_size=16, loader_workers=1, shard_size=64),
            progress=True,
        )
        return f"{s['faces_written']:,} faces in {s['shards_total']} shards ({s['rejects']['total']} rejected)"

    stages.run("tokenize-images", tokenize, finished=(paths["shards"] / INDEX_FILE).is_file())

    looks_file = paths["preview"] / "summary.json"

    def show() -> str:
        looks = preview(
            paths["shards"],
            paths["preview"],
            vqgan_config=vqgan["config"],
            vqgan_ckpt=vqgan["ckpt"],
            samples=PREVIEW_FACES,
            progress=True,
        )
        write_json(looks, looks_file)
        return f"{looks['faces']} faces decoded back through the VQGAN"

    stages.run("preview", show, finished=looks_file.is_file())
    looks = json.loads(looks_file.read_text(encoding="utf-8"))

    trained = _train(stages, paths, train_steps)
    generated = _generate(stages, paths, vqgan, trained, looks)
    evaluation = _evaluate(stages, paths, trained)
    return _report(out, stages, paths, looks, generated, evaluation)


def _train(stages: Stages, paths: dict, steps: int) -> Path:
    from trainer import checkpoint
    from trainer.train import TrainConfig, train

    config = TrainConfig(
        model="demo",
        batch_size=8,
        micro_batch_size=8,
        max_steps=steps,
        save_every=steps,
        val_every=max(steps // 3, 1),
        val_batch_size=16,
        seed=1234,
    )
    latest = checkpoint.latest(paths["run"])
    done = latest is not None and checkpoint.all_steps(paths["run"])[-1] >= steps

    def work() -> str:
        summary = train(paths["shards"], paths["run"], config, resume=latest is not None, progress=True)
        return f"{summary['steps']} steps of the demo model (CPU), final loss {summary['loss']:.3f}"

    stages.run("train", work, finished=done)
    return paths["run"]


def _generate(stages: Stages, paths: dict, vqgan: dict, run: Path, looks: dict) -> dict:
    from trainer.generate import RESULTS_FILE, Request, Sampling, run_requests
    from trainer.inference import load_session

    picture, image_id = _corpus_picture(paths, looks)
    row = next(r for r in looks["rows"] if r["image_id"] == image_id)
    face = paths["preview"] / row["original"] if row["original"] else None
    requests = [
        Request("to_image", text="celeba gender: female; smiling: true; black hair: true"),
        Request("to_caption", image=str(picture)),
        Request(
            "to_attributes",
            image=str(picture),
            attribute="gender",
            dataset=image_id.split("/")[0],
            candidates=["male", "female"],
        ),
    ]
    results_file = paths["generated"] / RESULTS_FILE

    def work() -> str:
        session = load_session(run, vqgan_config=vqgan["config"], vqgan_ckpt=vqgan["ckpt"])
        results = run_requests(session, requests, Sampling(samples=4, seed=0), paths["generated"])
        return f"{sum(len(r['samples']) for r in results)} samples for {len(results)} requests"

    stages.run("generate", work, finished=results_file.is_file())
    results = [json.loads(line) for line in results_file.read_text(encoding="utf-8").splitlines()]
    return {"results": results, "face": face}


def _corpus_picture(paths: dict, looks: dict) -> tuple[Path, str]:
    """A previewed face's source file, a val face where there is one (generate crops it as tokenize-images did)."""
    from corpus.layout import read_images

    shown = {r["image_id"] for r in looks["rows"] if r["original"]}
    table = [
        r for r in read_images(paths["corpus"], ["image_id", "path", "split"]).to_pylist() if r["image_id"] in shown
    ]
    chosen = next((r for r in table if r["split"] == "val"), table[0])
    return Path(chosen["path"]), chosen["image_id"]


def _evaluate(stages: Stages, paths: dict, run: Path) -> dict:
    from trainer.evaluate import REPORT_JSON, REPORT_TABLE, EvaluateConfig, run_evaluation
    from trainer.inference import load_session

    saved = paths["evaluation"] / REPORT_JSON

    def work() -> str:
        report = run_evaluation(
            load_session(run), paths["shards"], EvaluateConfig(split="val", batch_size=16), paths["evaluation"]
        )
        return f"{report['faces']} val faces evaluated"

    stages.run("evaluate", work, finished=saved.is_file())
    return {
        **json.loads(saved.read_text(encoding="utf-8")),
        "table": (paths["evaluation"] / REPORT_TABLE).read_text(encoding="utf-8"),
    }


def _shown(sample: dict) -> str:
    text = sample["value"] if "value" in sample else sample["text"]
    return text or "(nothing: the model ended the text at once)"


def _report(out: Path, stages: Stages, paths: dict, looks: dict, generated: dict, evaluation: dict) -> Path:
    from corpus.layout import chart_file
    from trainer.checkpoint import log_files

    from .report import Face, Generated, ReportData, write_report

    faces = [
        Face(
            paths["preview"] / r["original"] if r["original"] else None,
            paths["preview"] / r["reconstruction"],
            r["texts"],
        )
        for r in looks["rows"]
    ]
    made = []
    for r in generated["results"]:
        if r["prompt"] == "to_image":
            made.append(
                Generated(r["prompt"], r["text"], None, [paths["generated"] / s["image"] for s in r["samples"]])
            )
        else:
            given = f"{r['dataset']} {r['attribute']}" if r.get("attribute") else "a caption of this face"
            texts = [_shown(s) for s in r["samples"]]
            if "best_candidate" in r:
                texts.append("ranked by likelihood: " + ", ".join(f"{c} {v:.2f}" for c, v in r["candidates"].items()))
            made.append(Generated(r["prompt"], given, generated["face"], texts=texts))
    data = ReportData(
        stages.done,
        chart_file(paths["corpus"]),
        faces,
        log_files(paths["run"])["plot"],
        made,
        evaluation.get("table", "not evaluated"),
    )
    page = write_report(out, data)
    write_json([{"stage": s, "result": d, "seconds": round(t, 2)} for s, d, t in stages.done], out / "stages.json")
    return page


def serve_demo(out: Path, port: int, echo: Callable[[str], None] = print) -> None:
    """`demo --serve`: the web page (serve/) on the demo's model and VQGAN, the previewed faces as examples."""
    from serve.app import ServeConfig, serve
    from trainer.inference import load_session

    out = Path(out)
    vqgan = {"config": out / "vqgan" / "project.yaml", "ckpt": out / "vqgan" / "last.ckpt"}
    looks = json.loads((out / "preview" / "summary.json").read_text(encoding="utf-8"))
    examples = tuple(out / "preview" / r["original"] for r in looks["rows"] if r["original"])
    config = ServeConfig(
        port=port,
        examples=examples,
        title="Talk2Face — the untrained demo model",
        note=f"The demo's tiny model ({out / 'run'}), trained for a few minutes on sample data with a "
        "random VQGAN: its faces are noise and its texts are guesses. Serve a real checkpoint "
        "with `python3 cli.py serve --checkpoint talk2face.bin --vqgan-ckpt ...`.",
    )
    serve(
        lambda: load_session(out / "run", vqgan_config=vqgan["config"], vqgan_ckpt=vqgan["ckpt"], device="cpu"),
        config,
        echo=echo,
    )
