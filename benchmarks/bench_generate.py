"""Generation benchmark: 10 faces (256 image tokens each) from one caption, full-size Talk2Face (random weights).

  1. CPU, fp32: our batched decoding with the key-value cache (the prefix computed once, then one position
     per step) against the released way, a whole forward pass over the growing row for every new token.
     The uncached run would take many minutes, so a few of its steps are timed at several row lengths and
     the 256 steps are extrapolated (a step's time is close to linear in the row length); the output says so.
  2. With CUDA: faces per second (token generation, then the VQGAN excluded) in bf16 at batch 10 and 100.

  3. `--vs-hf`: greedy decoding of 256 image tokens against `transformers` `generate` (KV cache, greedy) on a
     GPT-2 of the same shape (SDPA, untied output layer), the same prompt length and 256 new tokens, at batch 1
     and 10, in interleaved pairs. Each side's greedy tokens are checked to be the same at both batch sizes.

    python benchmarks/bench_generate.py                  # ~2 minutes on 2 cores
    python benchmarks/bench_generate.py --uncached-points 2 --threads 1
    python benchmarks/bench_generate.py --vs-hf --skip-cpu   # needs the `bench` extra (transformers)

On a busy small machine, `--threads 1` can be several times faster for cached decoding: each step's
operations are tiny (10 rows), and two OpenMP threads sharing contended cores mostly wait for each other.
The load average is printed so that figures from a shared machine can be judged.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.config import load_config
from trainer.generate import IMAGE, Sampling, decode
from trainer.model import Talk2Face
from trainer.sequences import Layouts
from trainer.text import TextTokenizer

CAPTION = "This man has black hair and a beard. He is smiling and wears eyeglasses."


def setup(device: str, dtype: torch.dtype):
    config = load_config("paper")
    torch.manual_seed(0)
    model = Talk2Face(config).to(device=device, dtype=dtype).eval().requires_grad_(False)
    model.column_major_weights()  # as an inference session lays it out (trainer.inference.load_session)
    layouts = Layouts(config, TextTokenizer.for_config(config))
    return model, layouts, layouts.to_image_prompt(CAPTION)


def cached_seconds(model, layouts, prompt, faces: int, device: str) -> tuple[float, list]:
    sampling = Sampling(samples=1, batch_size=faces, seed=0)
    generator = torch.Generator(device).manual_seed(0)
    sync(device)
    start = time.perf_counter()
    out = decode(model, [prompt] * faces, IMAGE, layouts.tok, sampling, generator)
    sync(device)
    return time.perf_counter() - start, out


@torch.no_grad()
def uncached_step_seconds(model, prompt, faces: int, extra: int) -> float:
    """One released-style step: a full forward pass over the prompt and `extra` generated tokens, 10 rows."""
    length = len(prompt.tokens) + extra
    tokens = torch.randint(30522, 31546, (faces, length))
    tokens[:, : len(prompt.tokens)] = torch.tensor(prompt.tokens)
    segments = torch.full_like(tokens, 2)
    segments[:, : len(prompt.tokens)] = 1
    start = time.perf_counter()
    model(tokens, segments)[:, -1].argmax(-1)
    return time.perf_counter() - start


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cpu_section(args) -> None:
    import os

    if args.threads:
        torch.set_num_threads(args.threads)
    model, layouts, prompt = setup("cpu", torch.float32)
    steps = model.config.image_tokens
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load average "
        f"{load}, torch {torch.__version__}), fp32, {args.faces} faces x {steps} tokens, "
        f"prompt {len(prompt.tokens)} tokens"
    )
    seconds, out = cached_seconds(model, layouts, prompt, args.faces, "cpu")
    assert all(len(o["tokens"]) == steps for o in out)
    print(
        f"  with the cache (ours, batched):  {seconds:8.1f} s measured  ({args.faces * steps / seconds:.0f} tokens/s)"
    )
    uncached_step_seconds(model, prompt, args.faces, 0)  # warm-up
    points = [round(i * (steps - 1) / max(args.uncached_points - 1, 1)) for i in range(args.uncached_points)]
    timed = [(k, uncached_step_seconds(model, prompt, args.faces, k)) for k in points]
    for k, t in timed:
        print(f"    uncached step at row length {len(prompt.tokens) + k:3d}: {t:6.2f} s")
    if len(timed) > 1:  # least-squares line through (k, t), summed over the 256 steps
        n = len(timed)
        mean_k, mean_t = sum(k for k, _ in timed) / n, sum(t for _, t in timed) / n
        slope = sum((k - mean_k) * (t - mean_t) for k, t in timed) / sum((k - mean_k) ** 2 for k, _ in timed)
        total = sum(mean_t + slope * (k - mean_k) for k in range(steps))
    else:
        total = timed[0][1] * steps
    print(
        f"  without the cache (released way, also batched over the 10 faces): {total:8.1f} s "
        f"EXTRAPOLATED from {len(timed)} timed steps"
    )
    print(f"  speed-up: {total / seconds:.1f}x (goal >= 20x)")


def cuda_section(args) -> None:
    if not torch.cuda.is_available():
        print("CUDA: not available, section skipped")
        return
    model, layouts, prompt = setup("cuda", torch.bfloat16)
    print(f"CUDA ({torch.cuda.get_device_name()}), bf16 weights, token generation only (VQGAN decode excluded)")
    for faces in (10, 100):
        cached_seconds(model, layouts, prompt, faces, "cuda")  # warm-up
        seconds, _ = cached_seconds(model, layouts, prompt, faces, "cuda")
        print(f"  batch {faces:3d}: {seconds:6.2f} s, {faces / seconds:7.1f} faces/s")


def vs_hf_section(args) -> None:
    from benchmarks.bench_model import hf_gpt2
    from benchmarks.pairs import load_average

    if args.threads:
        torch.set_num_threads(args.threads)
    model, layouts, prompt = setup("cpu", torch.float32)
    peer = hf_gpt2(model.config).eval().requires_grad_(False)
    print(
        f"vs transformers generate (GPT-2 of the same shape, SDPA, KV cache), fp32 greedy, "
        f"{model.config.image_tokens} new tokens, prompt {len(prompt.tokens)} tokens, "
        f"CPU {torch.get_num_threads()} threads, {'CPU' if args.cpu_time else 'wall'} seconds, load {load_average()}"
    )
    tokens_of = {}
    clock = time.process_time if args.cpu_time else time.perf_counter
    for faces in (1, 10):
        tokens_of |= vs_hf_batch(model, layouts, prompt, peer, faces, args.pairs, clock)
    for side in ("ours", "peer"):
        same = all(row == tokens_of[(side, 1)][0] for row in tokens_of[(side, 10)])
        print(f"  {side}: batch-10 greedy tokens {'identical to' if same else 'DIFFER from'} batch 1's")


def vs_hf_batch(model, layouts, prompt, peer, faces: int, pairs: int, clock) -> dict:
    """Interleaved pairs at one batch size; the last greedy tokens of each side."""
    from benchmarks.pairs import interleaved, ratio_line

    steps = model.config.image_tokens
    sampling = Sampling(samples=1, batch_size=faces, greedy=True)
    ids = torch.tensor([prompt.tokens] * faces)
    tokens_of = {}

    def ours():
        start = clock()
        results = decode(model, [prompt] * faces, IMAGE, layouts.tok, sampling)
        tokens_of[("ours", faces)] = [o["tokens"] for o in results]
        return clock() - start

    def theirs():
        start = clock()
        with torch.no_grad():
            out = peer.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=steps,
                min_new_tokens=steps,
                pad_token_id=0,
            )
        tokens_of[("peer", faces)] = out[:, ids.shape[1] :].tolist()
        return clock() - start

    ours(), theirs()  # warm-up: the first decode of a process pays one-time start-up costs
    timings = interleaved(ours, theirs, pairs)
    assert all(len(t) == steps for t in tokens_of[("ours", faces)] + tokens_of[("peer", faces)])
    print(ratio_line(f"batch {faces:2d} greedy decoding", timings, goal=1.1 if faces == 1 else 1.5))
    return tokens_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=10)
    parser.add_argument("--uncached-points", type=int, default=3, help="Uncached steps timed for the extrapolation.")
    parser.add_argument("--threads", type=int, help="torch CPU threads [default: torch's choice].")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument("--vs-hf", action="store_true", help="Also time transformers generate beside ours.")
    parser.add_argument("--pairs", type=int, default=2, help="Interleaved pairs of --vs-hf per batch size.")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="--vs-hf in CPU seconds of the process (with --threads 1: steadier on a loaded machine).",
    )
    args = parser.parse_args()
    if not args.skip_cpu:
        cpu_section(args)
    if args.vs_hf:
        vs_hf_section(args)
    if not args.skip_gpu:
        cuda_section(args)


if __name__ == "__main__":
    main()
