"""The built-in demo: every stage of the pipeline on sample data written in each dataset's real format.

    python cli.py demo --out demo/
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from common.fileio import output_folder
from converters import DATASETS
from converters.convert_all import convert_all, format_table
from converters.fixtures import writer


def available_datasets() -> list[str]:
    """Datasets whose converter and fixture writer are both present."""
    return [n for n in DATASETS
            if importlib.util.find_spec(f"converters.{n}") and importlib.util.find_spec(f"converters.fixtures.{n}")]


def write_samples(root: Path) -> list[str]:
    names = available_datasets()
    for name in names:
        writer(name).write_sample(root / name)
    return names


def run_demo(out: Path) -> str:
    """Sample datasets -> convert all -> build-corpus -> tokenize-images (tiny random VQGAN) -> preview."""
    from corpus.build import build_corpus
    from facetokens.config import TokenizeConfig
    from facetokens.preview import preview
    from facetokens.tokenize_images import tokenize_images
    from samples.tiny_vqgan import write_tiny_vqgan

    out = output_folder(out)
    write_samples(out / "datasets")
    report = ["== convert all", format_table(convert_all(out / "datasets", out / "converted"))]
    stats = build_corpus(out / "converted", out / "corpus")
    report.append(f"== build-corpus: {stats['corpus']['pairs']:,} pairs, {stats['corpus']['images']:,} images -> {out / 'corpus'}")
    vqgan = write_tiny_vqgan(out / "vqgan")  # randomly initialised: the real FFHQ weights cannot ship
    tokens = tokenize_images(out / "corpus", out / "shards", vqgan_config=vqgan["config"], vqgan_ckpt=vqgan["ckpt"],
                             config=TokenizeConfig(gpus=0, batch_size=16, loader_workers=1, shard_size=64), progress=False)
    report.append(f"== tokenize-images: {tokens['faces_written']:,} faces in {tokens['shards_total']} shards, "
                  f"rejects {tokens['rejects']['total']} -> {out / 'shards'}")
    preview(out / "shards", out / "preview", vqgan_config=vqgan["config"], vqgan_ckpt=vqgan["ckpt"], samples=8)
    report.append(f"== preview: {out / 'preview' / 'index.html'} (tiny random VQGAN: reconstructions are noise)")
    return "\n".join(report)
