"""talk2face command line: a thin click group over the packages (all logic lives in them).

python cli.py convert celeba --root ~/data/celeba --out converted/
python cli.py convert all --roots ~/data --out converted/
python cli.py demo --out demo/
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click
from click.core import ParameterSource

import serve as serve_package  # the page's defaults (light: no Gradio, no torch)
from common.errors import UserError
from common.process import configure_process
from common.records import SPLITS
from corpus.config import BuildConfig
from facetokens.config import PRECISIONS, TokenizeConfig
from trainer.config import PRESETS

PRESET_NAMES = ", ".join(PRESETS)  # the model configs in trainer/configs/

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


class DataclassDefault(click.Option):
    """An option whose default (shown in --help) is a dataclass field's, `source="trainer.run:TrainConfig.seed"`,
    or a module constant's, `source="pipeline_demo:TRAIN_STEPS"`. The module is imported only when the command
    runs or shows its help, so `cli.py --help` stays light."""

    def __init__(self, *decls, source: str, **attrs):
        attrs.setdefault("show_default", True)
        super().__init__(*decls, **attrs)
        self.source = source

    def get_default(self, ctx: click.Context, call: bool = True):
        module, _, path = self.source.partition(":")
        owner, _, name = path.partition(".")
        found = getattr(importlib.import_module(module), owner)
        default = next(f for f in dataclasses.fields(found) if f.name == name).default if name else found
        return ",".join(f"{r:.2f}" for r in default) if isinstance(default, tuple) and not self.multiple else default


def given(ctx: click.Context, values: dict) -> dict:
    """The options the user gave (not their defaults)."""
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)}


def package_version() -> str:
    try:
        return version("talk2face")
    except PackageNotFoundError:  # run from a checkout that was not pip-installed
        import tomllib

        return tomllib.loads((Path(__file__).parent / "pyproject.toml").read_text(encoding="utf-8"))["project"][
            "version"
        ]


def path_option(*names, **settings):
    """A click option whose value is a path, handed over as a `pathlib.Path`."""
    return click.option(*names, type=click.Path(path_type=Path), **settings)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
@click.version_option(package_version(), prog_name="talk2face")
def main(verbose: bool) -> None:
    """Talk2Face: rebuild the face-text corpus, tokenize it, train and use the model."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.argument("dataset")
@path_option("--root", help="The dataset as downloaded and extracted.")
@path_option(
    "--roots",
    help="With `all`: a folder of datasets, one per registry name (or a YAML mapping names to paths).",
)
@path_option(
    "--out",
    required=True,
    help="Folder for DATASET.parquet, .rejects.jsonl, .summary.json.",
)
@click.option(
    "--opt",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A converter option (repeatable), e.g. --opt filtered=true.",
)
@user_errors
def convert(dataset: str, root: Path | None, roots: Path | None, out: Path, options: tuple[str, ...]) -> None:
    """Convert one dataset (or `all`) into face-text records."""
    import converters

    if dataset == "all":
        from converters.commands import convert_all, format_table

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
    click.echo(
        json.dumps({k: summary[k] for k in ("dataset", "rows", "images", "rejects", "splits", "notes")}, indent=2)
    )


@main.command("build-corpus")
@path_option(
    "--converted",
    required=True,
    help="Folder of DATASET.parquet files from `convert`.",
)
@path_option(
    "--out",
    required=True,
    help="The corpus folder (replaced atomically when complete).",
)
@click.option(
    "--split-ratios",
    cls=DataclassDefault,
    source="corpus.config:BuildConfig.split_ratios",
    help="train,val,test shares for datasets without an official split.",
)
@click.option(
    "--split-seed",
    cls=DataclassDefault,
    source="corpus.config:BuildConfig.seed",
    help="Text hashed with each person's id to place the person-level split (any string; not a number).",
)
@click.option("--seed", "old_seed", hidden=True, help="Deprecated name of --split-seed.")
@user_errors
def build_corpus(converted: Path, out: Path, split_ratios: str, split_seed: str, old_seed: str | None) -> None:
    """Merge converted datasets into one leak-free corpus with statistics against the paper."""
    from corpus.build import build_corpus as build
    from corpus.stats import markdown

    if old_seed is not None:
        click.echo("warning: build-corpus --seed is now --split-seed (a text, hashed with each person)", err=True)
        split_seed = old_seed
    stats = build(converted, out, BuildConfig(split_ratios=_ratios(split_ratios), seed=split_seed), progress=True)
    click.echo(markdown(stats))


def _ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--split-ratios {text!r}: expected three numbers like 0.90,0.05,0.05") from None


@main.command("tokenize-images")
@path_option("--corpus", "corpus_dir", required=True, help="The folder from build-corpus.")
@path_option("--out", required=True, help="Folder for the WebDataset shards (resumable).")
@path_option(
    "--vqgan-config",
    help="taming project.yaml (Net2NetTransformer or VQGAN config); not needed for a converted .safetensors.",
)
@path_option(
    "--vqgan-ckpt",
    required=True,
    help="last.ckpt (Lightning), a plain state dict, or .safetensors from convert-vqgan.",
)
@click.option(
    "--gpus", default=TokenizeConfig.gpus, show_default=True, help="Worker processes, one per GPU; 0 = one CPU worker."
)
@click.option(
    "--batch-size",
    type=int,
    show_default="64 on a GPU; on the CPU 4 per core, 4 to 16",
    help="Faces encoded together by one GPU (or CPU) worker.",
)
@click.option(
    "--loader-workers",
    type=int,
    show_default="cores / gpus - 1; on the CPU 0",
    help="Decoding processes per GPU worker.",
)
@click.option("--precision", type=click.Choice(PRECISIONS), default=TokenizeConfig.precision, show_default=True)
@click.option("--shard-size", default=TokenizeConfig.shard_size, show_default=True, help="Faces per shard.")
@click.option(
    "--num-nodes",
    default=TokenizeConfig.num_nodes,
    show_default=True,
    help="Machines sharing the work (each gets a static block of shards).",
)
@click.option(
    "--node-rank", default=TokenizeConfig.node_rank, show_default=True, help="This machine's rank, 0 .. num-nodes-1."
)
@user_errors
def tokenize_images(corpus_dir, out, vqgan_config, vqgan_ckpt, **settings) -> None:
    """Encode every unique face once to 256 VQGAN codes, into resumable WebDataset shards."""
    from facetokens.tokenize_images import tokenize_images as run

    summary = run(corpus_dir, out, vqgan_config=vqgan_config, vqgan_ckpt=vqgan_ckpt, config=TokenizeConfig(**settings))
    click.echo(json.dumps(summary, indent=2))


@main.command()
@path_option("--corpus", "corpus_dir", required=True, help="The folder from build-corpus.")
@click.option(
    "--format", "format_name", required=True, help="imagefolder (Hugging Face / diffusers), feedface or webdataset."
)
@path_option("--out", required=True, help="The export folder (resumable: rerun to finish).")
@click.option(
    "--split",
    "splits",
    multiple=True,
    type=click.Choice(SPLITS),
    cls=DataclassDefault,
    source="export.config:ExportConfig.splits",
    help="A split to export (repeatable).",
)
@click.option("--datasets", show_default="all", help="Comma-separated dataset names to export.")
@click.option(
    "--size",
    type=click.Choice(["256", "512", "1024"]),
    cls=DataclassDefault,
    source="export.config:ExportConfig.size",
    help="Face side in pixels.",
)
@click.option("--link", is_flag=True, help="Symbolic links to the source images instead of cropped faces.")
@click.option(
    "--attribute-text",
    type=click.Choice(["keyvalue", "sentence"]),
    cls=DataclassDefault,
    source="export.config:ExportConfig.attribute_text",
    help="Attribute pairs as their key-value text or as one plain sentence.",
)
@click.option("--workers", type=int, show_default="the CPU cores", help="Processes reading faces.")
@user_errors
def export(
    corpus_dir: Path,
    format_name: str,
    out: Path,
    splits: tuple[str, ...],
    datasets: str | None,
    size: str,
    link: bool,
    attribute_text: str,
    workers: int | None,
) -> None:
    """Write the corpus for other face-text systems: faces with their texts, per split, counts that reconcile."""
    from export.config import ExportConfig
    from export.core import SUMMARY_FILE, export_corpus

    names = tuple(n.strip() for n in datasets.split(",") if n.strip()) if datasets else None
    config = ExportConfig(
        format=format_name,
        splits=splits or SPLITS,
        datasets=names,
        size=int(size),
        link=link,
        attribute_text=attribute_text,
        workers=workers,
    )
    summary = export_corpus(corpus_dir, out, config)
    skipped = ", ".join(f"{reason} {n:,}" for reason, n in summary["skipped"].items()) or "none"
    click.echo(
        f"{summary['pairs_in']:,} pairs in: {summary['written']:,} written ({summary['faces_written']:,} faces), "
        f"{summary['skipped_total']:,} skipped ({skipped}); see {Path(out) / SUMMARY_FILE}"
    )


@main.command("export-model")
@path_option(
    "--checkpoint",
    required=True,
    help="A train RUN folder, talk2face.bin (released or UER names), a .safetensors file or an export folder.",
)
@click.option(
    "--config",
    "config_file",
    help="For a plain .bin: a config JSON (ours or the released base_config.json) or a preset.",
)
@path_option("--out", required=True, help="Folder for model.safetensors and config.json.")
@user_errors
def export_model(checkpoint: Path, config_file: str | None, out: Path) -> None:
    """Write a checkpoint as the safetensors folder that `trainer.weights.load_model` reads (no pickle)."""
    from common.fileio import output_folder
    from trainer.config import load_config
    from trainer.inference import resolve_checkpoint
    from trainer.weights import export as write_export
    from trainer.weights import load_model

    model = load_model(resolve_checkpoint(checkpoint), load_config(config_file) if config_file else None)
    folder = write_export(model, output_folder(out))
    click.echo(f"{folder}: model.safetensors + config.json ({model.num_parameters():,} parameters)")


@main.command("convert-vqgan")
@path_option("--vqgan-config", help="taming project.yaml.")
@path_option("--vqgan-ckpt", required=True, help="last.ckpt or a plain state dict.")
@path_option(
    "--out",
    required=True,
    help="The .safetensors file to write (weights + config, no pickle).",
)
@user_errors
def convert_vqgan(vqgan_config: Path | None, vqgan_ckpt: Path, out: Path) -> None:
    """Write the VQGAN weights as safetensors once, so later runs load no pickle at all."""
    from facetokens.vqgan_files import convert_vqgan as run

    click.echo(str(run(vqgan_config, vqgan_ckpt, out)))


@main.command()
@path_option("--shards", required=True, help="The folder from tokenize-images.")
@path_option("--out", required=True, help="Folder for index.html, grid.png and images/.")
@path_option(
    "--vqgan-config",
)
@path_option(
    "--vqgan-ckpt",
    required=True,
)
@click.option("--samples", default=16, show_default=True, help="Faces to show.")
@user_errors
def preview(shards: Path, out: Path, vqgan_config: Path | None, vqgan_ckpt: Path, samples: int) -> None:
    """Decode a sample of shards back through the VQGAN: original, reconstruction, error and texts side by side."""
    from facetokens.preview import preview as run

    summary = run(shards, out, vqgan_config=vqgan_config, vqgan_ckpt=vqgan_ckpt, samples=samples, progress=True)
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2, default=str))


@main.command("inspect-model")
@path_option("--checkpoint", help="talk2face.bin, a .safetensors file or an export folder.")
@click.option(
    "--config",
    "config_file",
    help=f"A config JSON (ours or the released base_config.json) or a preset: {PRESET_NAMES}.",
)
@click.option("--all-keys", is_flag=True, help="On a mismatch, name every key (default: counts and the first few).")
@user_errors
def inspect_model(checkpoint: Path | None, config_file: str | None, all_keys: bool) -> None:
    """Load a checkpoint strictly and print its config, parameter count, key format and tokenizer settings."""
    from trainer.config import load_config
    from trainer.weights import inspect

    config = load_config(config_file) if config_file else None
    click.echo(json.dumps(inspect(checkpoint, config, all_keys=all_keys), indent=2))


def _deprecated_dtype(ctx: click.Context, _param, value):
    if value is not None:
        click.echo("warning: --dtype is now --precision", err=True)
        ctx.meta["deprecated dtype"] = value
    return value


def _precision(ctx: click.Context, _param, value):
    """--precision, or the deprecated --dtype when only that was given (eager: it is read first)."""
    given_precision = ctx.get_parameter_source("dtype") not in (ParameterSource.DEFAULT, None)
    return value if given_precision else ctx.meta.get("deprecated dtype", value)


def _model_options(fn):
    """--checkpoint, --config, --vocab, --vqgan-*, --device, --precision: shared by generate and evaluate."""
    options = [
        path_option(
            "--checkpoint",
            required=True,
            help="talk2face.bin (released or UER names), a .safetensors file, an export folder or a train RUN folder.",
        ),
        click.option(
            "--config",
            "config_file",
            help="For a plain .bin: a config JSON (ours or the released "
            f"base_config.json) or a preset: {PRESET_NAMES}.",
            show_default="the checkpoint's own, else paper",
        ),
        click.option(
            "--vocab",
            help="The text vocabulary: the shipped BERT uncased one (default), by name or as an identical file.",
        ),
        path_option(
            "--vqgan-config",
            help="taming project.yaml (not needed for a converted .safetensors).",
        ),
        path_option("--vqgan-ckpt", help="last.ckpt or the .safetensors from convert-vqgan."),
        click.option("--device", help="cpu, cuda, cuda:1 ...", show_default="cuda when present"),
        click.option(
            "--precision",
            "dtype",
            type=click.Choice(PRECISIONS),
            default=PRECISIONS[0],
            show_default=True,
            callback=_precision,
            help="Number format of the model's weights and arithmetic.",
        ),
        click.option(
            "--dtype",
            "old_dtype",
            type=click.Choice(PRECISIONS),
            hidden=True,
            is_eager=True,
            callback=_deprecated_dtype,
            expose_value=False,
            help="Deprecated name of --precision.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command()
@_model_options
@click.option(
    "--prompt", type=click.Choice(["to_image", "to_caption", "to_attributes"]), help="The mode (or use --requests)."
)
@click.option("--text", help="to_image: the caption or attribute text.")
@path_option(
    "--image",
    help="to_caption / to_attributes: the face (read as tokenize-images reads it).",
)
@click.option("--attribute", help="to_attributes: the key, e.g. gender.")
@click.option("--dataset", help="to_attributes: a dataset name to put before the key (celeba gender:).")
@click.option("--candidates", help="to_attributes: comma-separated values to rank by log-likelihood, e.g. male,female.")
@path_option("--requests", "requests_file", help="A JSONL file, one request a line.")
@path_option("--out", required=True, help="Folder for the PNGs and results.jsonl.")
@click.option(
    "--samples",
    type=int,
    cls=DataclassDefault,
    source="trainer.generate:Sampling.samples",
    help="Samples per request (attributes: 1, greedy).",
)
@click.option(
    "--top-k",
    type=int,
    cls=DataclassDefault,
    source="trainer.generate:Sampling.top_k",
    help="0 = off; ties at the k-th logit are kept.",
)
@click.option(
    "--top-p",
    type=float,
    cls=DataclassDefault,
    source="trainer.generate:Sampling.top_p",
    help="Nucleus sampling; 0 = off.",
)
@click.option("--temperature", type=float, cls=DataclassDefault, source="trainer.generate:Sampling.temperature")
@click.option(
    "--seed", type=int, cls=DataclassDefault, source="trainer.generate:Sampling.seed", help="Seed of the sampling."
)
@click.option("--greedy", is_flag=True, help="Arg-max decoding (one sample).")
@click.option(
    "--batch-size",
    type=int,
    cls=DataclassDefault,
    source="trainer.generate:Sampling.batch_size",
    help="Rows decoded together, a row being one sample of one request.",
)
@path_option(
    "--clip",
    "clip_dir",
    help="A local CLIP folder (Hugging Face format): rank each request's samples against its condition.",
)
@click.option(
    "--keep",
    type=int,
    show_default="all, ranked",
    help="With --clip: keep the best N samples of each request (a request line's `keep` overrides it).",
)
@user_errors
def generate(
    checkpoint,
    config_file,
    vocab,
    vqgan_config,
    vqgan_ckpt,
    device,
    dtype,
    prompt,
    text,
    image,
    attribute,
    dataset,
    candidates,
    requests_file,
    out,
    clip_dir,
    keep,
    **sampling,
) -> None:
    """Faces from text (to_image), captions (to_caption) and attribute values (to_attributes) from faces."""
    from trainer.generate import Request, Sampling, check_plan, read_requests, run_requests, summary_lines
    from trainer.inference import check_device, load_session

    settings = Sampling(**sampling)
    check_device(device)
    if keep is not None and keep < 1:
        raise UserError(f"--keep {keep}: need at least 1")
    if requests_file is not None:
        if prompt is not None:
            raise UserError("give either --requests FILE or --prompt with its inputs, not both")
        requests = read_requests(requests_file)
    elif prompt is None:
        raise UserError("generate needs --prompt to_image|to_caption|to_attributes (or --requests FILE)")
    else:
        values = [c.strip() for c in candidates.split(",") if c.strip()] if candidates else None
        requests = [
            Request(
                prompt,
                text=text,
                image=str(image) if image else None,
                attribute=attribute,
                dataset=dataset,
                candidates=values,
            )
        ]
        requests[0].check("generate")
    check_plan(requests, settings, keep, clip_dir is not None)  # every request checked before any model work
    scorer = None
    if clip_dir is not None:
        from trainer.clip import ClipScorer

        scorer = ClipScorer.load(clip_dir, device or "cpu")
    session = load_session(checkpoint, config_file, vocab, vqgan_config, vqgan_ckpt, device, dtype)
    results = run_requests(session, requests, settings, out, clip=scorer, keep=keep)
    click.echo("\n".join(summary_lines(results, out)))


@main.command()
@_model_options
@path_option(
    "--clip",
    help="A local CLIP folder (Hugging Face format): rank faces and captions by CLIP score.",
)
@path_option("--examples", help="A folder of example faces for the caption and attribute tabs.")
@click.option(
    "--host",
    default=serve_package.DEFAULT_HOST,
    show_default=True,
    help="The address to listen on (0.0.0.0: every interface).",
)
@click.option("--port", default=serve_package.DEFAULT_PORT, show_default=True, help="The page's port.")
@user_errors
def serve(checkpoint, config_file, vocab, vqgan_config, vqgan_ckpt, device, dtype, clip, examples, host, port) -> None:
    """A local web page (Gradio): text to faces, face to caption, face to attributes; one request at a time."""
    from serve.app import ServeConfig, example_faces
    from serve.app import serve as run
    from trainer.inference import load_session

    if vqgan_ckpt is None:
        raise UserError("serve needs --vqgan-ckpt (faces are drawn and read through the VQGAN)")
    config = ServeConfig(host=host, port=port, examples=example_faces(examples))
    run(
        lambda: load_session(checkpoint, config_file, vocab, vqgan_config, vqgan_ckpt, device, dtype),
        config,
        clip=clip,
        echo=click.echo,
    )


@main.command()
@_model_options
@path_option("--shards", required=True, help="The folder from tokenize-images.")
@click.option(
    "--split", type=click.Choice(["val", "test"]), cls=DataclassDefault, source="trainer.evaluate:EvaluateConfig.split"
)
@click.option("--limit", type=int, help="At most this many faces (a quick run).")
@click.option(
    "--batch-size",
    type=int,
    cls=DataclassDefault,
    source="trainer.evaluate:EvaluateConfig.batch_size",
    help="Rows decoded or scored together, a row being one face with one prompt.",
)
@path_option("--out", help="Folder for evaluation.json and evaluation.md.")
@click.option("--no-meteor", is_flag=True, help="Skip METEOR (it starts Java, seconds).")
@click.option(
    "--skip-bad-shards",
    is_flag=True,
    cls=DataclassDefault,
    source="trainer.evaluate:EvaluateConfig.skip_bad_shards",
    help="Leave damaged shards out (named in the report) instead of refusing them.",
)
@click.option(
    "--fid",
    is_flag=True,
    help="Table 2: FID and IS of faces generated from the split's captions "
    "against its real faces (needs --vqgan-ckpt and --inception-weights).",
)
@click.option(
    "--fid-samples",
    type=int,
    cls=DataclassDefault,
    source="trainer.synthesis:SynthesisConfig.samples",
    help="Faces to generate for --fid (the paper's 1,000).",
)
@path_option(
    "--inception-weights",
    help="torch-fidelity's pt_inception-2015-12-05-6726825d.pth (see docs/reproducing.md).",
)
@path_option(
    "--corpus",
    "corpus_dir",
    show_default="the one SHARDS/index.json names",
    help="With --fid: the corpus of the real faces.",
)
@path_option(
    "--clip",
    "clip_dir",
    help="With --fid: also the mean CLIP score of the generated faces against their texts.",
)
@click.option(
    "--seed",
    type=int,
    cls=DataclassDefault,
    source="trainer.synthesis:SynthesisConfig.seed",
    help="With --fid: the sampling seed.",
)
@user_errors
def evaluate(
    checkpoint,
    config_file,
    vocab,
    vqgan_config,
    vqgan_ckpt,
    device,
    dtype,
    shards,
    split,
    limit,
    batch_size,
    out,
    no_meteor,
    skip_bad_shards,
    fid,
    fid_samples,
    inception_weights,
    corpus_dir,
    clip_dir,
    seed,
) -> None:
    """Measure a checkpoint on held-out faces: attribute accuracy, age MAE, candidate ranking, captions, losses."""
    from trainer.evaluate import EvaluateConfig, run_evaluation
    from trainer.inference import check_device, load_session
    from trainer.synthesis import SynthesisConfig

    config = EvaluateConfig(
        split=split, limit=limit, batch_size=batch_size, meteor=not no_meteor, skip_bad_shards=skip_bad_shards
    )
    check_device(device)
    synthesis = None
    if fid:
        if vqgan_ckpt is None:
            raise UserError(
                "--fid needs the VQGAN to turn generated codes into faces: pass --vqgan-ckpt "
                "(and --vqgan-config for a taming last.ckpt)"
            )
        synthesis = SynthesisConfig(
            samples=fid_samples,
            inception_weights=inception_weights,
            clip=clip_dir,
            corpus=corpus_dir,
            seed=seed,
            batch_size=batch_size,
        )
    elif clip_dir is not None or inception_weights is not None:
        raise UserError("--clip and --inception-weights apply with --fid")
    session = load_session(checkpoint, config_file, vocab, vqgan_config, vqgan_ckpt, device, dtype)
    report = run_evaluation(session, shards, config, out, synthesis=synthesis)
    click.echo(report["table"])


def _train_option(name: str, kind: type, help_text: str, source: str = "trainer.run:TrainConfig"):
    return click.option(
        name, type=kind, cls=DataclassDefault, source=f"{source}.{name[2:].replace('-', '_')}", help=help_text
    )


@main.command()
@path_option(
    "--shards",
    "shards_dir",
    required=True,
    help="The folder from tokenize-images (reads train/ and val/).",
)
@path_option(
    "--out",
    required=True,
    help="The run folder: checkpoints/, log.jsonl, val.jsonl, loss.png.",
)
@click.option(
    "--config",
    "model",
    cls=DataclassDefault,
    source="trainer.run:TrainConfig.model",
    help=f"Model config: a preset ({PRESET_NAMES}) or a JSON file; on --resume the run's.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly from its latest checkpoint.")
@click.option(
    "--reschedule", is_flag=True, help="With --resume and a new --max-steps: recompute the lr schedule over it."
)
@path_option(
    "--init-from",
    help="Start from these weights: talk2face.bin or one of our checkpoints.",
)
@_train_option("--max-steps", int, "Optimiser steps in all (fixes the warm-up/decay schedule).")
@_train_option("--save-every", int, "Steps between checkpoints.")
@_train_option("--val-every", int, "Steps between validations.")
@_train_option("--log-every", int, "Steps between lines of log.jsonl and the console.")
@_train_option("--seed", int, "Seed of the data order and the initial weights.")
@_train_option(
    "--batch-size", int, "Global batch: rows (one task example each) per optimiser step, all processes together."
)
@_train_option("--micro-batch-size", int, "Rows per process per forward pass, a multiple of 4 (the tasks).")
@_train_option("--lr", float, "Peak learning rate.", source="trainer.optim:OptimConfig")
@click.option("--compile", is_flag=True, help="torch.compile the model.")
@click.option(
    "--datasets",
    cls=DataclassDefault,
    source="trainer.data:DataConfig.datasets",
    show_default="all",
    help="Train on these datasets' texts only, comma-separated (cacd,celeba).",
)
@click.option(
    "--skip-bad-shards",
    is_flag=True,
    cls=DataclassDefault,
    source="trainer.data:DataConfig.skip_bad_shards",
    help="Leave damaged shards out (named, counted) instead of refusing.",
)
@click.pass_context
@user_errors
def train(
    ctx: click.Context, shards_dir: Path, out: Path, resume: bool, reschedule: bool, init_from: Path | None, **options
) -> None:
    """Train the Talk2Face prefix-LM on the shards (torchrun for many GPUs; see trainer/train.py)."""
    from trainer.train import train as run

    summary = run(shards_dir, out, resume=resume, init_from=init_from, reschedule=reschedule, **given(ctx, options))
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
@click.option("--serve", "then_serve", is_flag=True, help="Then start the web page (`serve`) on the demo's model.")
@click.option(
    "--port",
    default=serve_package.DEFAULT_PORT,
    show_default=True,
    help="With --serve: the page's port (on 127.0.0.1).",
)
@path_option(
    "--out",
    required=True,
    help="Folder for the sample data, every stage's output and report.html.",
)
@click.option("--fresh", is_flag=True, help="Start over instead of reusing the stages a previous run finished.")
@click.option(
    "--train-steps",
    type=int,
    cls=DataclassDefault,
    source="pipeline_demo:TRAIN_STEPS",
    help="Training steps of the demo model.",
)
@user_errors
def demo(out: Path, fresh: bool, train_steps: int, then_serve: bool, port: int) -> None:
    """The whole pipeline on built-in samples (real formats, written small): convert to evaluate, then report.html."""
    from pipeline_demo import run_demo

    page = run_demo(out, fresh=fresh, train_steps=train_steps, echo=click.echo)
    click.echo(f"open {page}")
    if then_serve:
        from pipeline_demo import serve_demo

        serve_demo(out, port=port, echo=click.echo)


if __name__ == "__main__":
    main()
