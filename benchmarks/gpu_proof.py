"""The GPU proof: every CUDA path of the project, measured in one call, one table and one JSON file.

    python benchmarks/gpu_proof.py --out gpu-proof/              # one H100/H200: under 8 minutes
    python benchmarks/gpu_proof.py --dry-run --out /tmp/proof    # the same code paths on the CPU, tiny sizes (CI)

Sections (each is timed and recorded; a failing section is recorded and the others still run):
  1. tests     the suite's GPU-marked tests (`pytest -m gpu`): VQGAN bf16/fp32 codes against the CPU's,
               a bf16 training step, cached against uncached greedy decoding, FID features (skipped on the CPU,
               with a reason).
  2. tokenize  `tokenize_images` with the full-size FFHQ VQGAN architecture (random weights written through
               the real checkpoint format) on 2,000 generated 1024x1024 JPEGs with 16 loader workers: faces/s,
               GPU utilisation (nvidia-smi), and the fraction of the 138.6 GFLOP/face ceiling (goal >= 40%).
  3. train     the full-size model from the released config on synthetic rows: tokens/s and MFU in bf16 with
               SDPA and FlexAttention, eager and compiled (goal >= 40% MFU), peak memory, and the projected
               time of the paper's 500k x 192 schedule on one and on eight GPUs (a projection: linear scaling).
  4. generate  faces/s for batches of 10 and 100 faces of 256 tokens, with the key-value cache.
  5. ddp       `torchrun --nproc-per-node 1 cli.py train` (NCCL on CUDA, gloo on the CPU): starts, steps, saves,
               is killed after a checkpoint and resumes to the end.

The dry run keeps every section's code path at tiny sizes (tiny VQGAN, 8 small JPEGs, the `demo` model, a few
steps); FlexAttention has no backward on the CPU, so there it runs forward only, and the compiled variants
(minutes of compilation on a small CPU) run in the full proof only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

GFLOP_PER_FACE = 138.6  # the full FFHQ encoder on one 256x256 face
PAPER_STEPS, PAPER_BATCH = 500_000, 192
GOALS = {"tokenize_ceiling": 0.40, "mfu": 0.40}


@dataclass(frozen=True)
class Sizes:
    photos: int  # generated JPEGs to tokenize
    photo_px: int  # their side
    vqgan: str  # "ffhq" (full architecture, random weights) or "tiny"
    loader_workers: int
    tokenize_batch: int
    model: str  # model preset
    train_rows: int  # rows per step (micro-batch) of the throughput runs
    train_steps: int  # timed steps per variant (after warm-up)
    warmup_steps: int
    generate_batches: tuple[int, ...]
    ddp_model: str  # model preset of the torchrun run (its shards hold 256 codes per face)
    ddp_steps: int
    ddp_batch: int
    compile: bool  # the compiled variants (minutes of compilation on a small CPU: full runs only)


FULL = Sizes(2000, 1024, "ffhq", 16, 64, "paper", 32, 20, 4, (10, 100), "paper", 6, 32, True)
DRY = Sizes(8, 128, "tiny", 0, 4, "tiny", 4, 2, 1, (2, 3), "demo", 4, 8, False)


# ----------------------------------------------------------------------------- bookkeeping
class Proof:
    """Rows of the final table, and the JSON record of every section."""

    def __init__(self, out: Path, dry_run: bool, device: torch.device):
        self.out, self.rows, self.sections = out, [], {}
        self.meta = {
            "dry_run": dry_run,
            "device": device_name(device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_cores": os.cpu_count(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def row(self, section: str, measure: str, value, goal: str = "", status: str = "") -> None:
        self.rows.append((section, measure, value, goal, status))

    def run(self, name: str, fn, *args) -> None:
        print(f"== {name} ...", flush=True)
        started = time.perf_counter()
        try:
            record = fn(self, *args)
            record["status"] = "ok"
        except Exception as error:  # a broken section is a finding: record it, run the others
            record = {
                "status": "failed",
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
            }
            self.row(name, "FAILED", f"{type(error).__name__}: {str(error)[:80]}")
        record["seconds"] = round(time.perf_counter() - started, 1)
        self.sections[name] = record
        print(f"   {name}: {record['status']} in {record['seconds']} s", flush=True)

    def finish(self) -> dict:
        self.meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        result = {
            "meta": self.meta,
            "sections": self.sections,
            "table": [dict(zip(("section", "measure", "value", "goal", "status"), r)) for r in self.rows],
        }
        from common.fileio import write_json

        write_json(result, self.out / "gpu-proof.json")
        print_table(self.rows, self.meta)
        return result


def print_table(rows: list[tuple], meta: dict) -> None:
    print(f"\nGPU proof on {meta['device']} (torch {meta['torch']}{', DRY RUN on the CPU' if meta['dry_run'] else ''})")
    widths = [max(len(str(r[i])) for r in rows + [("section", "measure", "value", "goal", "status")]) for i in range(5)]
    for r in [("section", "measure", "value", "goal", "status")] + rows:
        print("  " + "  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def peak_bf16_flops(device: torch.device) -> float | None:
    from trainer.train import peak_flops

    return peak_flops(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percent(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def verdict(value: float | None, goal: float) -> str:
    return "n/a" if value is None else ("met" if value >= goal else "NOT met")


# ----------------------------------------------------------------------------- 1. GPU-marked tests
def section_tests(proof: Proof, sizes: Sizes, device: torch.device, work: Path) -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    proof.row("tests", "pytest -m gpu", summary, "all pass", "ok" if done.returncode == 0 else "FAILED")
    if done.returncode != 0:
        raise RuntimeError(f"pytest -m gpu exited {done.returncode}: {summary}\n{done.stdout[-4000:]}")
    return {"summary": summary, "output": done.stdout[-4000:]}


# ----------------------------------------------------------------------------- 2. tokenize-images
def _write_photo(args: tuple[Path, int, int]) -> None:
    from bench_tokenize import photo
    from PIL import Image

    path, side, seed = args
    Image.fromarray(photo((side, side), seed)).save(path, quality=90)


def write_photos(folder: Path, count: int, side: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"face_{i:05d}.jpg" for i in range(count)]
    with Pool(max(1, min(16, os.cpu_count() or 1))) as pool:
        pool.map(_write_photo, [(p, side, i) for i, p in enumerate(paths)], chunksize=8)
    return paths


def write_vqgan(folder: Path, kind: str) -> dict[str, Path]:
    """A VQGAN written as the FFHQ release is (project.yaml + Lightning-style last.ckpt)."""
    import yaml

    from common.fileio import atomic_path
    from samples.tiny_vqgan import lightning_checkpoint, tiny_project_yaml, write_tiny_vqgan

    if kind == "tiny":
        return write_tiny_vqgan(folder)
    from facetokens.vqgan import FFHQ_CONFIG, VQGAN

    torch.manual_seed(0)
    model = VQGAN(FFHQ_CONFIG)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"config": folder / "project.yaml", "ckpt": folder / "last.ckpt"}
    with atomic_path(paths["config"]) as tmp:
        tmp.write_text(yaml.safe_dump(tiny_project_yaml(FFHQ_CONFIG), sort_keys=False), encoding="utf-8")
    with atomic_path(paths["ckpt"]) as tmp:
        torch.save(lightning_checkpoint(model), tmp)
    return paths


class GpuUtilisation:
    """Samples nvidia-smi's utilisation every half second while the block runs (absent on the CPU)."""

    def __init__(self, device: torch.device):
        self.samples: list[float] = []
        self.enabled = device.type == "cuda"
        self.stop = threading.Event()

    def __enter__(self):
        if self.enabled:
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.5):
            with contextlib.suppress(Exception):
                line = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.strip()
                self.samples.append(float(line.splitlines()[0]))

    def __exit__(self, *exc):
        self.stop.set()

    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


def section_tokenize(proof: Proof, sizes: Sizes, device: torch.device, work: Path) -> dict:
    from bench_tokenize import write_corpus

    from facetokens.config import TokenizeConfig
    from facetokens.tokenize_images import tokenize_images

    started = time.perf_counter()
    paths = write_photos(work / "photos", sizes.photos, sizes.photo_px)
    vqgan = write_vqgan(work / "vqgan", sizes.vqgan)
    corpus = write_corpus(work / "tokenize", paths)
    prepared = time.perf_counter() - started
    cuda = device.type == "cuda"
    config = TokenizeConfig(
        gpus=1 if cuda else 0,
        batch_size=sizes.tokenize_batch,
        loader_workers=sizes.loader_workers,
        precision="bf16" if cuda else "fp32",
        shard_size=500,
    )
    with GpuUtilisation(device) as utilisation:
        started = time.perf_counter()
        summary = tokenize_images(
            corpus, work / "tokenize_shards", vqgan_config=vqgan["config"], vqgan_ckpt=vqgan["ckpt"], config=config
        )
        seconds = time.perf_counter() - started
    rate = sizes.photos / seconds
    peak = peak_bf16_flops(device)
    ceiling = rate * GFLOP_PER_FACE * 1e9 / peak if peak and sizes.vqgan == "ffhq" else None
    proof.row(
        "tokenize",
        f"{sizes.photos} {sizes.photo_px}px JPEGs, {sizes.vqgan} VQGAN, "
        f"{sizes.loader_workers} loaders, {config.precision}",
        f"{rate:,.1f} faces/s",
    )
    proof.row("tokenize", "GPU utilisation (nvidia-smi mean)", percent(utilisation.mean()))
    proof.row(
        "tokenize",
        "fraction of the 138.6 GFLOP/face ceiling",
        percent(ceiling),
        f">= {GOALS['tokenize_ceiling']:.0%}",
        verdict(ceiling, GOALS["tokenize_ceiling"]),
    )
    return {
        "faces": sizes.photos,
        "seconds": round(seconds, 2),
        "faces_per_s": round(rate, 2),
        "inputs_seconds": round(prepared, 1),
        "gpu_utilisation": utilisation.mean(),
        "ceiling_fraction": ceiling,
        "config": dataclasses.asdict(config),
        "summary": json.loads(json.dumps(summary, default=str)),
    }


# ----------------------------------------------------------------------------- 3. training throughput
def throughput(config, sizes: Sizes, device: torch.device, compiled: bool, backward: bool) -> dict:
    """tokens/s, MFU and peak memory of training steps (bf16 autocast, fused AdamW on CUDA)."""
    from bench_model import batch

    from trainer.model import Talk2Face
    from trainer.optim import OptimConfig, build_optimizer
    from trainer.train import LossModel, flops_per_token

    torch.manual_seed(0)
    model = Talk2Face(config).to(device).train()
    runner = torch.compile(LossModel(model)) if compiled else LossModel(model)
    optimizer = build_optimizer(model, OptimConfig())
    data = batch(config, sizes.train_rows, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with autocast:
            loss = runner(*data)
        if backward:
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.set_grad_enabled(backward):
        for _ in range(sizes.warmup_steps):
            step()
        synchronize(device)
        started = time.perf_counter()
        for _ in range(sizes.train_steps):
            loss = step()
        synchronize(device)
    seconds = (time.perf_counter() - started) / sizes.train_steps
    tokens_per_s = sizes.train_rows * config.seq_length / seconds
    peak = peak_bf16_flops(device)
    mfu = flops_per_token(config, model.num_parameters()) * tokens_per_s / peak if peak and backward else None
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "tokens_per_s": round(tokens_per_s, 1),
        "step_seconds": round(seconds, 4),
        "mfu": mfu,
        "peak_memory_gib": memory,
        "loss": loss.item(),
        "backward": backward,
    }


def section_train(proof: Proof, sizes: Sizes, device: torch.device, work: Path) -> dict:
    from trainer.config import load_config

    base = load_config(sizes.model)
    cuda = device.type == "cuda"
    variants = [(a, c) for a in ("sdpa", "flex") for c in ((False, True) if sizes.compile else (False,))]
    results = {}
    for attention, compiled in variants:
        name = f"{attention}{' compiled' if compiled else ''}"
        config = dataclasses.replace(base, attention=attention)
        backward = cuda or attention == "sdpa"  # FlexAttention has no backward on the CPU
        result = throughput(config, sizes, device, compiled, backward)
        results[name] = result
        hours = PAPER_STEPS * PAPER_BATCH * base.seq_length / result["tokens_per_s"] / 3600
        result["projected_hours_1_gpu"], result["projected_hours_8_gpus"] = hours, hours / 8
        memory = f", peak {result['peak_memory_gib']:.1f} GiB" if result["peak_memory_gib"] is not None else ""
        what = "fwd+bwd+AdamW" if backward else "forward only (no flex backward on the CPU)"
        precision = "bf16" if cuda else "fp32"
        proof.row(
            "train",
            f"{sizes.model} model, {sizes.train_rows} x {base.seq_length}, {precision}, {name}, {what}",
            f"{result['tokens_per_s']:,.0f} tok/s{memory}",
            f">= {GOALS['mfu']:.0%} MFU",
            f"MFU {percent(result['mfu'])} {verdict(result['mfu'], GOALS['mfu'])}",
        )
        if cuda:
            torch.cuda.empty_cache()
    best = max(results.values(), key=lambda r: r["tokens_per_s"] if r["backward"] else 0)
    proof.row(
        "train",
        f"paper schedule {PAPER_STEPS:,} x {PAPER_BATCH} (PROJECTION, linear scaling)",
        f"{best['projected_hours_1_gpu'] / 24:.1f} days on 1, {best['projected_hours_8_gpus'] / 24:.1f} on 8",
    )
    return {"variants": results, "model": sizes.model, "rows": sizes.train_rows}


# ----------------------------------------------------------------------------- 4. generation
def section_generate(proof: Proof, sizes: Sizes, device: torch.device, work: Path) -> dict:
    from trainer.config import load_config
    from trainer.generate import IMAGE, Sampling, decode
    from trainer.model import Talk2Face
    from trainer.sequences import Layouts
    from trainer.text import TextTokenizer

    config = load_config(sizes.model)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = Talk2Face(config).to(device=device, dtype=dtype).eval().requires_grad_(False)
    layouts = Layouts(config, TextTokenizer.for_config(config))
    prompt = layouts.to_image_prompt("This man has black hair and a beard. He is smiling and wears eyeglasses.")
    results = {}
    for faces in sizes.generate_batches:
        sampling = Sampling(samples=1, batch_size=faces, seed=0)
        for timed in (False, True):  # the first call warms up kernels and the allocator
            generator = torch.Generator(device).manual_seed(0)
            synchronize(device)
            started = time.perf_counter()
            out = decode(model, [prompt] * faces, IMAGE, layouts.tok, sampling, generator)
            synchronize(device)
        seconds = time.perf_counter() - started
        assert all(len(o["tokens"]) == config.image_tokens for o in out)
        results[faces] = {"seconds": round(seconds, 3), "faces_per_s": round(faces / seconds, 2)}
        proof.row(
            "generate",
            f"{faces} faces x {config.image_tokens} tokens, KV cache, {str(dtype)[6:]}",
            f"{faces / seconds:,.2f} faces/s",
        )
    return {"batches": results, "model": sizes.model}


# ----------------------------------------------------------------------------- 5. torchrun DDP
def section_ddp(proof: Proof, sizes: Sizes, device: torch.device, work: Path) -> dict:
    from bench_train import write_paper_shards

    shards = write_paper_shards(work / "ddp_shards", faces=max(64, sizes.ddp_batch * 4), shard_size=32)
    run = work / "ddp_run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "1",
        "cli.py",
        "train",
        "--shards",
        str(shards),
        "--out",
        str(run),
        "--config",
        sizes.ddp_model,
        "--max-steps",
        str(sizes.ddp_steps),
        "--save-every",
        "2",
        "--val-every",
        "1000",
        "--batch-size",
        str(sizes.ddp_batch),
        "--micro-batch-size",
        str(sizes.ddp_batch),
    ]
    first = run_until_checkpoint(command, run, step=2)
    resumed = subprocess.run(command + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    if resumed.returncode != 0:
        raise RuntimeError(f"resume exited {resumed.returncode}: {resumed.stderr.strip()[-2000:]}")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    steps = [row["step"] for row in log]
    if steps != list(range(1, sizes.ddp_steps + 1)):
        raise RuntimeError(f"log.jsonl steps after kill and resume: {steps}")
    from trainer import checkpoint

    latest = checkpoint.latest(run)
    backend = "nccl" if device.type == "cuda" else "gloo"
    proof.row(
        "ddp",
        f"torchrun 1 process ({backend}): start, {sizes.ddp_steps} steps, kill after step 2, resume",
        f"latest {latest.name if latest else None}",
        "resumes to the end",
        "ok",
    )
    return {
        "backend": backend,
        "killed_at": first,
        "steps_logged": steps,
        "latest": str(latest),
        "final_loss": log[-1]["loss"],
    }


def run_until_checkpoint(command: list[str], run: Path, step: int, timeout: float = 600) -> int:
    """Start the run, kill it (the whole process group, as a lost job) once checkpoint `step` is complete."""
    from trainer import checkpoint

    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"train ended (exit {process.returncode}) before checkpoint {step}: {process.stdout.read()[-2000:]}"
                )
            if step in checkpoint.all_steps(run):
                return step
            time.sleep(0.2)
        raise RuntimeError(f"no checkpoint {step} after {timeout:.0f} s")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        wait_for_group_exit(process.pid)


def wait_for_group_exit(group: int, timeout: float = 60) -> None:
    """torchrun's workers outlive its own exit by a moment; the run folder's lock is free only once all are gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise RuntimeError(f"processes of the killed run (group {group}) still alive after {timeout:.0f} s")


SECTIONS = {
    "tests": section_tests,
    "tokenize": section_tokenize,
    "train": section_train,
    "generate": section_generate,
    "ddp": section_ddp,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-proof"), help="folder for gpu-proof.json")
    parser.add_argument("--dry-run", action="store_true", help="the same code paths on the CPU at tiny sizes")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run only these sections")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_proof: no CUDA device here; run it on a GPU machine, or pass --dry-run", file=sys.stderr)
        return 2
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", 0)
    sizes = DRY if args.dry_run else FULL
    proof = Proof(args.out, args.dry_run, device)
    with tempfile.TemporaryDirectory(prefix="gpu-proof-") as tmp:
        for name in args.only or SECTIONS:
            proof.run(name, SECTIONS[name], sizes, device, Path(tmp) / name)
    result = proof.finish()
    failed = [name for name, s in result["sections"].items() if s["status"] != "ok"]
    if failed:
        print(
            f"gpu_proof: failed sections: {', '.join(failed)} (details in {args.out / 'gpu-proof.json'})",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
