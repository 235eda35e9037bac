"""Model benchmark: forward + backward tokens/s of the full-size Talk2Face (random weights, released config).

1. CPU, fp32 and bf16 autocast, a small batch of full 334-token rows (a face->caption layout:
   262 prefix tokens, 72 target tokens), a few steps after one warm-up.
2. With CUDA: bf16 autocast, SDPA against FlexAttention (compiled, block mask), a realistic batch,
   with model FLOPs utilisation against the GPU's bf16 peak.

3. `--vs-hf`: against a `transformers` GPT-2 of the same shape (SDPA attention, untied output layer,
   dropout 0.1, fp32, train mode) on the same rows, forward + loss + backward in interleaved pairs, at the
   paper shape and at 4 layers x 256. Rows alternate the two layouts of training (face -> caption: 72
   labelled positions of 334; caption -> face: 256 + [SEP]), so about half the positions carry a label,
   as in training. GPT-2 computes its logits and loss over every position, as a user of it would.

  python benchmarks/bench_model.py                       # ~2 minutes on 2 cores
  python benchmarks/bench_model.py --cpu-batch 1 --cpu-steps 2 --gpu-batch 64
4. `--process`: the CLI's process settings (common/process.py) measured one by one: the same training
   steps (Talk2Face.loss forward + backward + AdamW step) in fresh processes with none, the allocator
   settings, the OpenMP wait policy, and both, interleaved; steps/s against none and each one's peak memory.

  python benchmarks/bench_model.py --vs-hf --skip-cpu     # needs the `bench` extra (transformers)
  python benchmarks/bench_model.py --process --skip-cpu --shapes 4x256
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.config import load_config
from trainer.model import Talk2Face
from trainer.sequences import IGNORE
from trainer.train import flops_per_token, peak_flops

PREFIX = 262  # [CLS] to caption [SEP] <256 image tokens> [SEP]
IMAGE_PREFIX = 77  # caption -> face: [CLS] to image [SEP] <text> [SEP], then 256 image tokens and [SEP]
SHAPES = {"paper": {}, "4x256": {"layers": 4, "hidden_size": 256, "heads": 4, "feedforward_size": 1024}}


def batch(config, rows: int, device) -> tuple[torch.Tensor, ...]:
    """Full rows of the face->caption layout: the image-token prefix, then text targets (random ids)."""
    prefix = config.image_tokens + PREFIX - 256
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (rows, config.seq_length), generator=g)
    segments = torch.ones_like(tokens)
    segments[:, prefix:] = 2
    labels = torch.full_like(tokens, IGNORE)
    labels[:, prefix - 1 : -1] = tokens[:, prefix:]
    return tokens.to(device), segments.to(device), labels.to(device)


def train_flops_per_token(model: Talk2Face) -> float:
    """The trainer's `flops_per_token` over the matmul weights only (embedding lookups are free)."""
    return flops_per_token(model.config, model.num_parameters() - sum(p.numel() for p in model.embedding.parameters()))


def tokens_per_second(model, data, steps: int, autocast) -> float:
    tokens, segments, labels = data
    sync = torch.cuda.synchronize if tokens.is_cuda else (lambda: None)

    def step():
        with autocast():
            loss = model.loss(tokens, segments, labels)
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
    print(
        f"CPU: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"{model.num_parameters():,} parameters, batch {args.cpu_batch} x {config.seq_length}, {args.cpu_steps} steps"
    )
    for name, autocast in [
        ("fp32", contextlib.nullcontext),
        ("bf16 autocast", lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
    ]:
        rate = tokens_per_second(model, data, args.cpu_steps, autocast)
        print(
            f"  {name:14s} forward+backward {rate:8.1f} tokens/s  "
            f"({rate * train_flops_per_token(model) / 1e9:.1f} GFLOP/s)"
        )


def gpu_section(args) -> None:
    if not torch.cuda.is_available():
        print("CUDA: not available, GPU section skipped")
        return
    name = torch.cuda.get_device_name()
    peak = (peak_flops(torch.device("cuda")) or 0) / 1e12 or None  # TFLOP/s, the trainer's table
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
        print(
            f"  {attention:5s} forward+backward {rate:10.0f} tokens/s  ({tflops:.1f} TFLOP/s{mfu}), "
            f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
        )
        del model, data
        torch.cuda.empty_cache()


def mixed_batch(config, rows: int) -> tuple[torch.Tensor, ...]:
    """Rows alternating face -> caption and caption -> face layouts (labels as `trainer.sequences` sets them)."""
    tokens, segments, labels = batch(config, rows, "cpu")
    for r in range(1, rows, 2):
        segments[r] = 2
        segments[r, :IMAGE_PREFIX] = 1
        labels[r] = IGNORE
        labels[r, IMAGE_PREFIX - 1 : -1] = tokens[r, IMAGE_PREFIX:]
    return tokens, segments, labels


def hf_gpt2(config):
    """A `transformers` GPT-2 of our shape: same layers, widths, vocabulary, positions and dropout; untied output."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.max_positions,
        n_embd=config.hidden_size,
        n_layer=config.layers,
        n_head=config.heads,
        n_inner=config.feedforward_size,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        tie_word_embeddings=False,
        bos_token_id=101,
        eos_token_id=102,
        attn_implementation="sdpa",
    )
    return GPT2LMHeadModel(hf_config).train()


def vs_hf_section(args) -> None:
    from benchmarks.pairs import load_average

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(
        f"vs transformers GPT-2 (SDPA), fp32 forward+loss+backward, CPU {torch.get_num_threads()} threads, "
        f"batch {args.cpu_batch} x 334, {'CPU' if args.cpu_time else 'wall'} seconds, load {load_average()}"
    )
    for shape in args.shapes.split(","):
        vs_hf_shape(shape, args.cpu_batch, args.pairs, clock)


def vs_hf_shape(shape: str, rows: int, pairs: int, clock) -> None:
    from benchmarks.pairs import interleaved, ratio_line, timed

    config = load_config("paper").replace(**SHAPES[shape])
    torch.manual_seed(0)
    ours, peer = Talk2Face(config).train(), hf_gpt2(config)
    tokens, segments, labels = mixed_batch(config, rows)
    peer_labels = torch.full_like(labels, IGNORE)  # GPT-2 shifts its labels itself: label i is token i
    peer_labels[:, 1:] = labels[:, :-1]

    def our_step():
        ours.loss(tokens, segments, labels).backward()
        ours.zero_grad(set_to_none=True)

    def peer_step():
        peer(input_ids=tokens, labels=peer_labels).loss.backward()
        peer.zero_grad(set_to_none=True)

    our_step(), peer_step()  # warm-up
    timings = interleaved(lambda: timed(our_step, clock), lambda: timed(peer_step, clock), pairs)
    print(
        f"  {shape}: {ours.num_parameters():,} vs {peer.num_parameters():,} parameters, "
        f"{int((labels != IGNORE).sum())} of {labels.numel()} positions labelled"
    )
    print(ratio_line(f"{shape} forward+backward", timings, goal=1.05))


PROCESS_VARIANTS = ("none", "malloc", "openmp", "both")


def process_child(variant: str, shape: str, rows: int, steps: int) -> None:
    """In a fresh process: apply `variant`'s settings before torch loads, time `steps` training steps, print JSON."""
    import json
    import os

    from common import process
    from common.memory import peak_rss_mb

    if variant in ("openmp", "both"):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if variant in ("malloc", "both"):
        process._mallopt(process.MALLOC_SETTINGS)
    config = load_config("paper").replace(**SHAPES[shape])
    torch.manual_seed(0)
    model = Talk2Face(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    tokens, segments, labels = mixed_batch(config, rows)

    def step():
        model.loss(tokens, segments, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    print(json.dumps({"variant": variant, "seconds": seconds, "peak_mib": peak_rss_mb()}))


def process_section(args) -> None:
    import json
    import os
    import statistics
    import subprocess

    from benchmarks.pairs import load_average

    shape = args.shapes.split(",")[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OMP_WAIT", "GOMP_"))}
    print(
        f"process settings: {shape}, batch {args.cpu_batch} x 334, {args.process_steps} training steps per run, "
        f"{args.pairs} interleaved rounds, load {load_average()}"
    )
    runs: dict[str, list[dict]] = {v: [] for v in PROCESS_VARIANTS}
    for round_ in range(args.pairs):
        order = PROCESS_VARIANTS if round_ % 2 == 0 else PROCESS_VARIANTS[::-1]
        for variant in order:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--process-child",
                    variant,
                    "--shapes",
                    shape,
                    "--cpu-batch",
                    str(args.cpu_batch),
                    "--process-steps",
                    str(args.process_steps),
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    for variant in PROCESS_VARIANTS[1:]:
        ratios = sorted(n["seconds"] / v["seconds"] for n, v in zip(runs["none"], runs[variant]))
        peak = statistics.median(r["peak_mib"] for r in runs[variant])
        print(
            f"  {variant:6s}: steps/s {statistics.median(ratios):.2f}x of none (min {ratios[0]:.2f}, "
            f"max {ratios[-1]:.2f}), peak memory {peak:,.0f} MiB"
        )
    print(
        f"  none  : {statistics.median(r['seconds'] for r in runs['none']) / args.process_steps:.2f} s/step, "
        f"peak memory {statistics.median(r['peak_mib'] for r in runs['none']):,.0f} MiB  [load {load_average()}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-batch", type=int, default=2)
    parser.add_argument("--cpu-steps", type=int, default=3)
    parser.add_argument("--gpu-batch", type=int, default=32)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument("--vs-hf", action="store_true", help="Also time a same-shape transformers GPT-2 beside ours.")
    parser.add_argument("--pairs", type=int, default=5, help="Interleaved pairs of --vs-hf.")
    parser.add_argument("--threads", type=int, help="torch CPU threads for --vs-hf [default: torch's choice].")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="--vs-hf in CPU seconds of the process (with --threads 1: steadier on a loaded machine).",
    )
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"Model shapes of --vs-hf, of {', '.join(SHAPES)}.")
    parser.add_argument("--process", action="store_true", help="Measure the CLI's process settings one by one.")
    parser.add_argument("--process-steps", type=int, default=3)
    parser.add_argument("--process-child", choices=PROCESS_VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.process_child:
        process_child(args.process_child, args.shapes.split(",")[0], args.cpu_batch, args.process_steps)
        return
    if not args.skip_cpu:
        cpu_section(args)
    if args.process:
        process_section(args)
    if args.vs_hf:
        vs_hf_section(args)
    if not args.skip_gpu:
        gpu_section(args)


if __name__ == "__main__":
    main()
