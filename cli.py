"""talk2face command line: a thin click group over the packages (all logic lives in them).

    python cli.py convert celeba --root ~/data/celeba --out converted/
    python cli.py convert all --roots ~/data --out converted/
    python cli.py demo --out demo/
"""
from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from common.errors import UserError
from common.process import configure_process
from corpus.config import BuildConfig
from facetokens.config import PRECISIONS, TokenizeConfig

# At import, before any command imports torch (OpenMP reads its wait policy once, when it loads); spawned
# worker processes import this module again and get the same settings. See common/process.py.
configure_process()


def user_errors(fn):
    """Print a user error as one line on stderr and exit 2, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:  # the file system refused: a full disk, a read-only or vanished folder
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or e}", err=True)
            sys.exit(2)
    return wrapper


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """Talk2Face: rebuild the face-text corpus, tokenize it, train and use the model."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("dataset")
@click.option("--root", type=click.Path(path_type=Path), help="The dataset as downloaded and extracted.")
@click.option("--roots", type=click.Path(path_type=Path), help="With `all`: a folder of datasets, one per registry name (or a YAML mapping names to paths).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for DATASET.parquet, .rejects.jsonl, .summary.json.")
@click.option("--opt", "options", multiple=True, metavar="KEY=VALUE", help="A converter option (repeatable), e.g. --opt filtered=true.")
@user_errors
def convert(dataset: str, root: Path | None, roots: Path | None, out: Path, options: tuple[str, ...]) -> None:
    """Convert one dataset (or `all`) into face-text records."""
    import converters

    if dataset == "all":
        from converters.convert_all import convert_all, format_table

        if roots is None:
            raise UserError("convert all needs --roots DIR (a folder of datasets or a YAML file of name: path)")
        results = convert_all(roots, out, list(options))
        click.echo(format_table(results))
        if any(r["status"].startswith("failed") for r in results):
            sys.exit(1)
        return
    if root is None:
        raise UserError(f"convert {dataset} needs --root DIR, the dataset as downloaded")
    summary = converters.convert(dataset, root, out, list(options))
    click.echo(json.dumps({k: summary[k] for k in ("dataset", "rows", "images", "rejects", "splits", "notes")}, indent=2))


@main.command("build-corpus")
@click.option("--converted", required=True, type=click.Path(path_type=Path), help="Folder of DATASET.parquet files from `convert`.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The corpus folder (replaced atomically when complete).")
@click.option("--split-ratios", help="train,val,test shares for datasets without an official split.",
              default=",".join(f"{r:.2f}" for r in BuildConfig.split_ratios), show_default=True)
@click.option("--seed", default=BuildConfig.seed, show_default=True, help="Seed of the deterministic person-level split.")
@user_errors
def build_corpus(converted: Path, out: Path, split_ratios: str, seed: str) -> None:
    """Merge converted datasets into one leak-free corpus with statistics against the paper."""
    from corpus.build import build_corpus as build
    from corpus.stats import markdown

    stats = build(converted, out, BuildConfig(split_ratios=_ratios(split_ratios), seed=seed))
    click.echo(markdown(stats))


def _ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--split-ratios {text!r}: expected three numbers like 0.90,0.05,0.05") from None


@main.command("tokenize-images")
@click.option("--corpus", "corpus_dir", required=True, type=click.Path(path_type=Path), help="The folder from build-corpus.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the WebDataset shards (resumable).")
@click.option("--vqgan-config", type=click.Path(path_type=Path), help="taming project.yaml (Net2NetTransformer or VQGAN config); not needed for a converted .safetensors.")
@click.option("--vqgan-ckpt", required=True, type=click.Path(path_type=Path), help="last.ckpt (Lightning), a plain state dict, or .safetensors from convert-vqgan.")
@click.option("--gpus", default=TokenizeConfig.gpus, show_default=True, help="Worker processes, one per GPU; 0 = one CPU worker.")
@click.option("--batch-size", type=int, help="Faces encoded together [default: 64 on a GPU; on the CPU 4 per core, 4 to 16].")
@click.option("--loader-workers", type=int, help="Decoding processes per GPU worker [default: cores / gpus - 1; on the CPU 0].")
@click.option("--precision", type=click.Choice(PRECISIONS), default=TokenizeConfig.precision, show_default=True)
@click.option("--shard-size", default=TokenizeConfig.shard_size, show_default=True, help="Faces per shard.")
@click.option("--num-nodes", default=TokenizeConfig.num_nodes, show_default=True, help="Machines sharing the work (each gets a static block of shards).")
@click.option("--node-rank", default=TokenizeConfig.node_rank, show_default=True, help="This machine's rank, 0 .. num-nodes-1.")
@user_errors
def tokenize_images(corpus_dir, out, vqgan_config, vqgan_ckpt, **settings) -> None:
    """Encode every unique face once to 256 VQGAN codes, into resumable WebDataset shards."""
    from facetokens.tokenize_images import tokenize_images as run

    summary = run(corpus_dir, out, vqgan_config=vqgan_config, vqgan_ckpt=vqgan_ckpt, config=TokenizeConfig(**settings))
    click.echo(json.dumps(summary, indent=2))


@main.command("convert-vqgan")
@click.option("--vqgan-config", type=click.Path(path_type=Path), help="taming project.yaml.")
@click.option("--vqgan-ckpt", required=True, type=click.Path(path_type=Path), help="last.ckpt or a plain state dict.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The .safetensors file to write (weights + config, no pickle).")
@user_errors
def convert_vqgan(vqgan_config: Path | None, vqgan_ckpt: Path, out: Path) -> None:
    """Write the VQGAN weights as safetensors once, so later runs load no pickle at all."""
    from facetokens.vqgan_files import convert_vqgan as run

    click.echo(str(run(vqgan_config, vqgan_ckpt, out)))


@main.command()
@click.option("--shards", required=True, type=click.Path(path_type=Path), help="The folder from tokenize-images.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for preview.html and preview.png.")
@click.option("--vqgan-config", type=click.Path(path_type=Path))
@click.option("--vqgan-ckpt", required=True, type=click.Path(path_type=Path))
@click.option("--samples", default=16, show_default=True, help="Faces to show.")
@user_errors
def preview(shards: Path, out: Path, vqgan_config: Path | None, vqgan_ckpt: Path, samples: int) -> None:
    """Decode a sample of shards back through the VQGAN: original, reconstruction, error and texts side by side."""
    from facetokens.preview import preview as run

    summary = run(shards, out, vqgan_config=vqgan_config, vqgan_ckpt=vqgan_ckpt, samples=samples)
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2, default=str))


@main.command("inspect-model")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="talk2face.bin, a .safetensors file or an export folder.")
@click.option("--config", "config_file", help="A config JSON (ours or the released base_config.json) or a preset: paper, tiny.")
@user_errors
def inspect_model(checkpoint: Path | None, config_file: str | None) -> None:
    """Load a checkpoint strictly and print its config, parameter count, key format and tokenizer settings."""
    from trainer.config import load_config
    from trainer.weights import inspect

    config = load_config(config_file) if config_file else None
    click.echo(json.dumps(inspect(checkpoint, config), indent=2))


def _model_options(fn):
    """--checkpoint, --config, --vocab, --vqgan-*, --device, --dtype: shared by generate and evaluate."""
    options = [
        click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
                     help="talk2face.bin (released or UER names), a .safetensors file, an export folder or a train RUN folder."),
        click.option("--config", "config_file", help="For a plain .bin: a config JSON (ours or the released base_config.json) or a preset."),
        click.option("--vocab", help="The text vocabulary: the shipped BERT uncased one (default), by name or as an identical file."),
        click.option("--vqgan-config", type=click.Path(path_type=Path), help="taming project.yaml (not needed for a converted .safetensors)."),
        click.option("--vqgan-ckpt", type=click.Path(path_type=Path), help="last.ckpt or the .safetensors from convert-vqgan."),
        click.option("--device", help="cpu, cuda, cuda:1 ... [default: cuda when present]"),
        click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command()
@_model_options
@click.option("--prompt", type=click.Choice(["to_image", "to_caption", "to_attributes"]), help="The mode (or use --requests).")
@click.option("--text", help="to_image: the caption or attribute text.")
@click.option("--image", type=click.Path(path_type=Path), help="to_caption / to_attributes: the face (read as tokenize-images reads it).")
@click.option("--attribute", help="to_attributes: the key, e.g. gender.")
@click.option("--dataset", help="to_attributes: a dataset name to put before the key (celeba gender:).")
@click.option("--candidates", help="to_attributes: comma-separated values to rank by log-likelihood, e.g. male,female.")
@click.option("--requests", "requests_file", type=click.Path(path_type=Path), help="A JSONL file, one request a line.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the PNGs and results.jsonl.")
@click.option("--samples", default=10, show_default=True, help="Samples per request (attributes: 1, greedy).")
@click.option("--top-k", default=70, show_default=True, help="0 = off; ties at the k-th logit are kept.")
@click.option("--top-p", default=0.0, show_default=True, help="Nucleus sampling; 0 = off.")
@click.option("--temperature", default=1.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--greedy", is_flag=True, help="Arg-max decoding (one sample).")
@click.option("--batch-size", default=100, show_default=True, help="Rows (request x sample) decoded together.")
@user_errors
def generate(checkpoint, config_file, vocab, vqgan_config, vqgan_ckpt, device, dtype, prompt, text, image, attribute,
             dataset, candidates, requests_file, out, **sampling) -> None:
    """Faces from text (to_image), captions (to_caption) and attribute values (to_attributes) from faces."""
    from trainer.generate import Request, Sampling, read_requests, run_requests, summary_lines
    from trainer.inference import load_session

    settings = Sampling(**sampling)
    if requests_file is not None:
        if prompt is not None:
            raise UserError("give either --requests FILE or --prompt with its inputs, not both")
        requests = read_requests(requests_file)
    elif prompt is None:
        raise UserError("generate needs --prompt to_image|to_caption|to_attributes (or --requests FILE)")
    else:
        values = [c.strip() for c in candidates.split(",") if c.strip()] if candidates else None
        requests = [Request(prompt, text=text, image=str(image) if image else None, attribute=attribute,
                            dataset=dataset, candidates=values)]
        requests[0].check("generate")
    session = load_session(checkpoint, config_file, vocab, vqgan_config, vqgan_ckpt, device, dtype)
    results = run_requests(session, requests, settings, out)
    click.echo("\n".join(summary_lines(results, out)))


@main.command()
@_model_options
@click.option("--shards", required=True, type=click.Path(path_type=Path), help="The folder from tokenize-images.")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
@click.option("--limit", type=int, help="At most this many faces (a quick run).")
@click.option("--batch-size", default=64, show_default=True, help="Rows decoded or scored together.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for evaluation.json and evaluation.md.")
@user_errors
def evaluate(checkpoint, config_file, vocab, vqgan_config, vqgan_ckpt, device, dtype, shards, split, limit,
             batch_size, out) -> None:
    """Measure a checkpoint on held-out faces: attribute accuracy, age MAE, candidate ranking, captions, losses."""
    from trainer.evaluate import EvaluateConfig, run_evaluation
    from trainer.inference import load_session

    session = load_session(checkpoint, config_file, vocab, vqgan_config, vqgan_ckpt, device, dtype)
    report = run_evaluation(session, shards, EvaluateConfig(split=split, limit=limit, batch_size=batch_size), out)
    click.echo(report["table"])


@main.command()
@click.option("--shards", "shards_dir", required=True, type=click.Path(path_type=Path), help="The folder from tokenize-images (reads train/ and val/).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The run folder: checkpoints/, log.jsonl, val.jsonl, loss.png.")
@click.option("--config", "model", help="Model config: paper, tiny or a JSON file [default: paper; on --resume the run's].")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly from its latest checkpoint.")
@click.option("--init-from", type=click.Path(path_type=Path), help="Start from these weights: talk2face.bin or one of our checkpoints.")
@click.option("--max-steps", type=int, help="Optimiser steps in all [default: 500000].")
@click.option("--save-every", type=int, help="Steps between checkpoints [default: 1000].")
@click.option("--val-every", type=int, help="Steps between validations [default: 1000].")
@click.option("--seed", type=int, help="Seed of the data order and the initial weights [default: 1234].")
@click.option("--batch-size", type=int, help="Global batch, all processes together [default: 192].")
@click.option("--micro-batch-size", type=int, help="Rows per process per forward pass, a multiple of 4 [default: 24].")
@click.option("--lr", type=float, help="Peak learning rate [default: 2e-4].")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@user_errors
def train(shards_dir: Path, out: Path, model: str | None, resume: bool, init_from: Path | None, lr: float | None,
          compile_: bool, **overrides) -> None:
    """Train the Talk2Face prefix-LM on the shards (torchrun for many GPUs; see trainer/train.py)."""
    import dataclasses

    from trainer import checkpoint
    from trainer.train import TrainConfig
    from trainer.train import train as run

    folder = checkpoint.latest(out) if resume else None
    base = TrainConfig.from_dict(checkpoint.load_state(folder)[2]) if folder is not None else TrainConfig()
    changes = {k: v for k, v in overrides.items() if v is not None}
    if model:
        changes["model"] = model
    if compile_:
        changes["compile"] = True
    if lr is not None:
        if resume:  # the restored optimizer and schedule carry the run's rate: a new one would be recorded, not used
            raise UserError("--lr cannot change on --resume; start a new run (--init-from the checkpoint) for another rate")
        changes["optim"] = dataclasses.replace(base.optim, lr=lr)
    summary = run(shards_dir, out, dataclasses.replace(base, **changes), resume=resume, init_from=init_from)
    if summary.get("rank", 0) == 0:
        click.echo(json.dumps(summary, indent=2))


@main.command()
@click.option("--markdown", is_flag=True, help="Print the README's dataset section (generated from the manifests).")
def datasets(markdown: bool) -> None:
    """List the dataset names, their access and their paper counts."""
    import converters
    import manifests

    if markdown:
        from manifests.readme import datasets_markdown

        click.echo(datasets_markdown(converters.DATASETS))
        return
    for name in converters.DATASETS:
        m = manifests.load(name)
        click.echo(f"{name:15s} {m['access']:10s} paper {m['counts']['paper']:>7,}  {m['title']}")


@main.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the sample data, every stage's output and report.html.")
@click.option("--fresh", is_flag=True, help="Start over instead of reusing the stages a previous run finished.")
@click.option("--train-steps", type=int, help="Training steps of the demo model [default: pipeline_demo.TRAIN_STEPS].")
@user_errors
def demo(out: Path, fresh: bool, train_steps: int) -> None:
    """The whole pipeline on built-in samples (real formats, written small): convert to evaluate, then report.html."""
    from pipeline_demo import TRAIN_STEPS, run_demo

    page = run_demo(out, fresh=fresh, train_steps=train_steps or TRAIN_STEPS, echo=click.echo)
    click.echo(f"open {page}")


if __name__ == "__main__":
    main()
