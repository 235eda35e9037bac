"""Training benchmarks: data stream samples/s and padding (CPU, one process), full-size model tokens/s (CPU bf16),
and on CUDA the full-size model's tokens/s and MFU (SDPA vs FlexAttention, eager vs compiled) with the projected
time of the paper's 500k steps x 192.

    python benchmarks/bench_train.py [--faces 4000] [--cpu-steps 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetokens import shards
from facetokens.shards import Face
from trainer.config import load_config
from trainer.data import DataConfig, TrainStream
from trainer.model import Talk2Face
from trainer.sequences import Layouts
from trainer.text import TextTokenizer
from trainer.train import LossModel, flops_per_token, peak_flops

WORDS = [
    "a",
    "young",
    "smiling",
    "woman",
    "with",
    "long",
    "blond",
    "wavy",
    "hair",
    "and",
    "heavy",
    "makeup",
    "looks",
    "at",
    "the",
    "camera",
    "wearing",
    "earrings",
]


def write_paper_shards(out: Path, faces: int, shard_size: int = 1000) -> Path:
    """Paper-sized faces (256 codes): every face with CelebA-like attributes, a third with 1-10 captions."""
    rng = np.random.default_rng(0)
    folder = shards.split_dir(out, "train")
    folder.mkdir(parents=True, exist_ok=True)
    keys = [
        "gender",
        "smiling",
        "young",
        "bald",
        "eyeglasses",
        "wavy hair",
        "big nose",
        "oval face",
        "pale skin",
        "bangs",
    ]
    for index in range(shards.shard_count(faces, shard_size)):
        first, last = shards.shard_bounds(index, faces, shard_size)
        samples = []
        for k in range(first, last):
            texts = [
                {
                    "dataset": "celeba",
                    "kind": "attributes",
                    "text": "",
                    "attributes": [{"key": key, "value": str(rng.random() < 0.5).lower()} for key in keys],
                }
            ]
            if k % 3 == 0:
                texts += [
                    {
                        "dataset": "mm_celeba_hq",
                        "kind": "caption",
                        "attributes": None,
                        "text": " ".join(rng.choice(WORDS, rng.integers(8, 30))),
                    }
                    for _ in range(rng.integers(1, 11))
                ]
            samples.append(
                shards.sample(
                    Face(f"celeba/{k:06d}", "celeba", "", "", None, "train", texts), rng.integers(0, 1024, 256)
                )
            )
        shards.write_shard(folder, index, samples, [], first, last)
    return out


def bench_stream(out: Path, faces: int) -> None:
    config = load_config("paper")
    layouts = Layouts(config, TextTokenizer.for_config(config))
    stream = TrainStream(write_paper_shards(out, faces), layouts, DataConfig(), 24, range(1), 1, seed=0)
    stream.next_batch(0)  # fill the buffers
    rows, padding, batches = 0, 0.0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < 10:
        batch = stream.next_batch(0)
        rows += len(batch["tokens"])
        padding += batch["padding"]
        batches += 1
    seconds = time.perf_counter() - started
    print(
        f"data stream (paper layouts, micro-batch 24, 1 process): {rows / seconds:,.0f} samples/s "
        f"(goal >= 10,000); padding {padding / batches:.1%} (goal < 10%)"
    )


def bench_model(device: str, dtype_bf16: bool, attention: str, compiled: bool, batch: int, steps: int) -> float:
    config = load_config("paper").replace(attention=attention)
    torch.manual_seed(0)
    model = Talk2Face(config).to(device)
    runner = LossModel(model)
    if compiled:
        runner = torch.compile(runner)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda" or None)
    tokens = torch.randint(0, config.vocab_size, (batch, config.seq_length), device=device)
    segments = torch.ones_like(tokens)
    segments[:, 70:] = 2
    labels = tokens.clone()
    labels[:, :70] = -100
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype_bf16)
    timings = []
    for step in range(steps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with autocast:
            loss = runner(tokens, segments, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            timings.append(time.perf_counter() - started)
    tokens_per_s = batch * config.seq_length / float(np.median(timings))
    return tokens_per_s, flops_per_token(config, model.num_parameters())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=4000)
    parser.add_argument("--cpu-steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        bench_stream(Path(tmp), args.faces)
    tps, _ = bench_model("cpu", True, "sdpa", False, batch=4, steps=args.cpu_steps)
    print(
        f"full-size model on the CPU ({torch.get_num_threads()} threads), bf16 autocast, batch 4 x 334: "
        f"{tps:,.0f} tokens/s"
    )
    if not torch.cuda.is_available():
        print("CUDA: not available here; the CUDA section (tokens/s, MFU, SDPA vs FlexAttention, compiled) was skipped")
        return
    peak = peak_flops(torch.device("cuda"))
    for attention in ("sdpa", "flex"):
        for compiled in (False, True):
            tps, flops = bench_model("cuda", True, attention, compiled, batch=64, steps=10)
            mfu = flops * tps / peak if peak else float("nan")
            days = 500_000 * 192 * 334 / tps / 86400
            print(
                f"CUDA {torch.cuda.get_device_name()} bf16 {attention:4s} {'compiled' if compiled else 'eager   '}: "
                f"{tps:,.0f} tokens/s, MFU {mfu:.1%}; 500k x 192 on 1 GPU: {days:.1f} days, on 8: {days / 8:.1f} days"
            )


if __name__ == "__main__":
    main()
