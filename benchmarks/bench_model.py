"""Model benchmark: forward + backward tokens/s of the full-size Talk2Face (random weights, released config).

  1. CPU, fp32 and bf16 autocast, a small batch of full 334-token rows (a face->caption layout:
     262 prefix tokens, 72 target tokens), a few steps after one warm-up.
  2. With CUDA: bf16 autocast, SDPA against FlexAttention (compiled, block mask), a realistic batch,
     with model FLOPs utilisation against the GPU's bf16 peak.

    python benchmarks/bench_model.py                       # ~2 minutes on 2 cores
    python benchmarks/bench_model.py --cpu-batch 1 --cpu-steps 2 --gpu-batch 64
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.config import load_config
from trainer.model import Talk2Face
from trainer.sequences import IGNORE
from trainer.train import flops_per_token

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}
PREFIX = 262  # [CLS] to caption [SEP] <256 image tokens> [SEP]


def batch(config, rows: int, device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (rows, config.seq_length), generator=g)
    segments = torch.ones_like(tokens)
    segments[:, PREFIX:] = 2
    labels = torch.full_like(tokens, IGNORE)
    labels[:, PREFIX - 1:-1] = tokens[:, PREFIX:]
    return tokens.to(device), segments.to(device), labels.to(device)


def train_flops_per_token(model: Talk2Face) -> float:
    """The trainer's `flops_per_token` over the matmul weights only (embedding lookups are free)."""
    return flops_per_token(model.config, model.num_parameters() - sum(p.numel() for p in model.embedding.parameters()))


def tokens_per_second(model, data, steps: int, autocast) -> float:
    tokens, segments, labels = data
    sync = torch.cuda.synchronize if tokens.is_cuda else (lambda: None)

    def step():
        with autocast():
            logits = model(tokens, segments)
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up (and compilation for FlexAttention)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return tokens.numel() * steps / (time.perf_counter() - start)


def cpu_section(args) -> None:
    config = load_config("paper")
    torch.manual_seed(0)
    model = Talk2Face(config).train()
    data = batch(config, args.cpu_batch, "cpu")
    print(f"CPU: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{model.num_parameters():,} parameters, batch {args.cpu_batch} x {config.seq_length}, {args.cpu_steps} steps")
    for name, autocast in [("fp32", contextlib.nullcontext),
                           ("bf16 autocast", lambda: torch.autocast("cpu", dtype=torch.bfloat16))]:
        rate = tokens_per_second(model, data, args.cpu_steps, autocast)
        print(f"  {name:14s} forward+backward {rate:8.1f} tokens/s  "
              f"({rate * train_flops_per_token(model) / 1e9:.1f} GFLOP/s)")


def gpu_section(args) -> None:
    if not torch.cuda.is_available():
        print("CUDA: not available, GPU section skipped")
        return
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    print(f"CUDA: {name}, batch {args.gpu_batch} x 334, {args.gpu_steps} steps, bf16 autocast")
    for attention in ("sdpa", "flex"):
        config = load_config("paper").replace(attention=attention)
        torch.manual_seed(0)
        model = Talk2Face(config).cuda().train()
        data = batch(config, args.gpu_batch, "cuda")
        torch.cuda.reset_peak_memory_stats()
        rate = tokens_per_second(model, data, args.gpu_steps, lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        tflops = rate * train_flops_per_token(model) / 1e12
        mfu = f", MFU {tflops / peak:.1%}" if peak else ""
        print(f"  {attention:5s} forward+backward {rate:10.0f} tokens/s  ({tflops:.1f} TFLOP/s{mfu}), "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        del model, data
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-batch", type=int, default=2)
    parser.add_argument("--cpu-steps", type=int, default=3)
    parser.add_argument("--gpu-batch", type=int, default=32)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    if not args.skip_cpu:
        cpu_section(args)
    gpu_section(args)


if __name__ == "__main__":
    main()
