"""tokenize-images benchmark: image preparation, end to end against the encoder alone, against the naive loop.

Generates its own photo-like JPEGs (1024x1024 and CelebA's 178x218) and a tiny random VQGAN, then:
  1. decode + crop + resize, images/s on one core: `facetokens.images.prepare_face` (JPEG draft decoding)
     against plain Pillow open -> convert -> resize. Goal: >= 3x on the 1024x1024 photos.
  2. `tokenize_images` end to end (CPU, one encoder process, loader workers, shard writing) against
     the encoder alone on pre-decoded tensors with the same batch size and threads. Goal: >= 80%.
  3. the straightforward loop of the original code base: open, resize, encode one image at a time.
  4. with CUDA: the full-size FFHQ encoder (random weights) in bf16, faces/s against its FLOP ceiling
     (138.6 GFLOP per face), the CPU decode rate per core needed to feed it, and tokenize_images end
     to end on that GPU with all cores decoding.

  5. `--vs-naive` (instead of 1-4): the command (`cli.py tokenize-images --gpus 0`, its defaults and process
     settings) against the naive loop (read and resize each face as the command does, so
     both see the same pixels; the encoder and its nearest-code search one image at a time; the VQGAN loaded
     once), each side a fresh process, at 48 and 1,000 faces (half 1024x1024,
     half 178x218; copies of a few dozen generated photos), tiny VQGAN, interleaved pairs; both sides' codes
     are compared face by face.

    python benchmarks/bench_tokenize.py                 # ~3 minutes on 2 busy cores
    python benchmarks/bench_tokenize.py --faces 96 --batch-size 16
    python benchmarks/bench_tokenize.py --vs-naive --pairs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GFLOP_PER_FACE = 138.6  # full FFHQ encoder, one 256x256 image
GOAL_DECODE = 3.0
GOAL_END_TO_END = 0.8


# ----------------------------------------------------------------------------- inputs
def photo(size: tuple[int, int], seed: int) -> np.ndarray:
    """A photo-like picture: smooth shapes, texture and sensor noise (JPEG entropy close to a real face photo)."""
    from PIL import Image, ImageFilter

    w, h = size
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize((w, h), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(3))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0, 10, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_photos(folder: Path, size: tuple[int, int], count: int, tag: str) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{tag}_{i:04d}.jpg"
        Image.fromarray(photo(size, seed=zlib.crc32(f"{tag}{i}".encode()))).save(path, quality=90)
        paths.append(path)
    return paths


def write_corpus(folder: Path, paths: list[Path]) -> Path:
    import pyarrow as pa

    from converters.helpers.rows import make_table
    from converters.helpers.schema import BOX_TYPE
    from corpus import layout

    ids = [f"bench/{i:06d}_{p.stem}" for i, p in enumerate(paths)]
    # images.parquet stores each file's `path` (the layout before roots.yaml, which read_images still reads): the
    # photos are in several folders
    images = pa.table(
        {
            "image_id": ids,
            "dataset": ["bench"] * len(ids),
            "path": [str(p) for p in paths],
            "image": [p.name for p in paths],
            "box": pa.nulls(len(ids), BOX_TYPE),
            "split": ["train"] * len(ids),
        }
    )
    corpus = folder / "corpus"
    layout.write_images(corpus, images)
    pairs = make_table(
        len(ids),
        dataset="bench",
        image=[p.name for p in paths],
        image_id=ids,
        split="train",
        kind="caption",
        text=[f"a photo number {i}" for i in range(len(ids))],
        source="bench",
    )
    layout.write_pair_part(corpus, "train", 0, pairs)
    return corpus


# ----------------------------------------------------------------------------- 1. decoding
def images_per_s(fn, paths: list[Path]) -> float:
    start = time.perf_counter()
    for p in paths:
        fn(p)
    return len(paths) / (time.perf_counter() - start)


def bench_decode(sets: dict[str, list[Path]], rounds: int = 5) -> dict[str, tuple[float, float]]:
    """Ours and plain Pillow alternately, `rounds` times; the best round of each (least disturbed by other load)."""
    from facetokens.images import plain_prepare, prepare_face

    results = {}
    print(f"\n1. decode + crop + resize to 256x256, one core (images/s; best of {rounds} alternating rounds)")
    print(f"   {'images':10s} {'ours':>8s} {'plain Pillow':>13s} {'speed-up':>9s}")
    for name, paths in sets.items():
        ours, plain = [], []
        for _ in range(rounds):
            ours.append(images_per_s(prepare_face, paths))
            plain.append(images_per_s(plain_prepare, paths))
        best_ours, best_plain = max(ours), max(plain)
        results[name] = (best_ours, best_plain)
        ratio = best_ours / best_plain
        goal = (
            f"  (goal >= {GOAL_DECODE:.0f}x: {'met' if ratio >= GOAL_DECODE else 'NOT met'})"
            if name == "1024x1024"
            else ""
        )
        print(f"   {name:10s} {best_ours:8.1f} {best_plain:13.1f} {ratio:8.2f}x{goal}")
    return results


# ----------------------------------------------------------------------------- 2 + 3. CPU end to end
def cpu_seconds() -> float:
    """CPU time of this process and its finished children (loader workers).

    Steadier than wall time on a shared machine."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def encoder_alone(model, arrays: list[np.ndarray], batch_size: int) -> float:
    """faces/s of the encoder on pre-decoded uint8 faces, normalised and batched as the pipeline does."""
    import torch

    from facetokens.vqgan import encode_batch

    tensors = [torch.from_numpy(np.stack(arrays[i : i + batch_size])) for i in range(0, len(arrays), batch_size)]
    start = time.perf_counter()
    for batch in tensors:
        encode_batch(model, batch, "cpu", bf16=False)
    return len(arrays) / (time.perf_counter() - start)


def naive_loop(model, paths: list[Path]) -> float:
    """The original code base's way: open, convert, resize, encode, one image at a time."""
    import torch
    from PIL import Image

    start = time.perf_counter()
    for path in paths:
        image = Image.open(path).convert("RGB").resize((256, 256))
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
        model.encode_to_codes(x)
    return len(paths) / (time.perf_counter() - start)


def bench_end_to_end(
    folder: Path, paths: list[Path], vqgan: dict, batch_size: int, loader_workers: int, rounds: int
) -> None:
    """Encoder alone and tokenize_images, interleaved `rounds` times; the best round of each is compared."""
    import torch

    from facetokens.config import TokenizeConfig, cpu_cores
    from facetokens.images import prepare_face
    from facetokens.tokenize_images import tokenize_images
    from facetokens.vqgan_files import load_vqgan

    corpus = write_corpus(folder, paths)
    threads = cpu_cores()
    model = load_vqgan(vqgan["config"], vqgan["ckpt"], with_decoder=False)
    arrays = [prepare_face(p) for p in paths]
    alone, steady, command, cpu_alone, cpu_pipeline = [], [], [], [], []
    for r in range(rounds):
        torch.set_num_threads(threads)
        used = cpu_seconds()
        alone.append(encoder_alone(model, arrays, batch_size))
        cpu_alone.append(len(paths) / (cpu_seconds() - used))
        start, used = time.perf_counter(), cpu_seconds()
        summary = tokenize_images(
            corpus,
            folder / f"shards{r}",
            vqgan_config=vqgan["config"],
            vqgan_ckpt=vqgan["ckpt"],
            config=TokenizeConfig(gpus=0, batch_size=batch_size, loader_workers=loader_workers, shard_size=16),
            progress=False,
        )
        command.append(len(paths) / (time.perf_counter() - start))
        cpu_pipeline.append(len(paths) / (cpu_seconds() - used))
        steady.append(summary["faces_per_s"])
    torch.set_num_threads(threads)
    naive = naive_loop(model, paths[: max(8, len(paths) // 3)])
    a, s, c = (max(v) for v in (alone, steady, command))
    print(
        f"\n2. end to end on the CPU, tiny VQGAN, {len(paths)} faces (half 1024x1024, half 178x218), "
        f"batch {batch_size}, "
        f"{threads} torch threads, {loader_workers} loader worker(s); best of {rounds} interleaved rounds"
    )
    print(
        f"   encoder alone on pre-decoded tensors   {a:8.2f} faces/s   rounds: {', '.join(f'{v:.2f}' for v in alone)}"
    )
    print(
        f"   tokenize_images, encoding phase        {s:8.2f} faces/s   {s / a:6.1%} of the encoder alone "
        f"(goal >= {GOAL_END_TO_END:.0%}: {'met' if s / a >= GOAL_END_TO_END else 'NOT met'}); "
        f"rounds: {', '.join(f'{v:.2f}' for v in steady)}"
    )
    print(
        f"   tokenize_images, whole command         {c:8.2f} faces/s   {c / a:6.1%} "
        f"(includes reading the corpus, hashing and loading the model, starting the loader)"
    )
    ca, cp = max(cpu_alone), max(cpu_pipeline)
    print(
        f"   per CPU-second (all processes)          encoder alone {ca:.2f} faces, "
        f"whole command {cp:.2f} faces: {cp / ca:.1%}"
    )
    print("\n3. straightforward loop (open, resize, encode one at a time)")
    print(
        f"   naive loop                              {naive:8.2f} faces/s   tokenize_images is {s / naive:.2f}x faster"
    )


# ----------------------------------------------------------------------------- 4. GPU
def bench_gpu(folder: Path, decode_rate_1024: float, faces: int, batch_size: int) -> None:
    import torch

    from facetokens.vqgan import FFHQ_CONFIG, VQGAN
    from trainer.train import peak_flops

    name = torch.cuda.get_device_name(0)
    peak = (peak_flops(torch.device("cuda")) or 0) / 1e12 or None  # TFLOP/s, the trainer's table
    model = VQGAN(FFHQ_CONFIG, with_decoder=False).cuda().to(memory_format=torch.channels_last)
    x = (torch.rand(batch_size, 256, 256, 3, device="cuda") * 255).to(torch.uint8)
    print(f"\n4. GPU: {name}, full-size FFHQ encoder (random weights), batch {batch_size}")
    for precision in ("bf16", "fp32"):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        per_s = gpu_rate(model, x, precision == "bf16")
        flops = per_s * GFLOP_PER_FACE / 1000
        ceiling = (
            f", ceiling {peak * 1000 / GFLOP_PER_FACE:,.0f} faces/s at {peak} TFLOP/s: {flops / peak:.1%}"
            if peak and precision == "bf16"
            else ""
        )
        print(f"   {precision}: {per_s:8,.0f} faces/s = {flops:6.1f} TFLOP/s{ceiling}")
        if precision == "bf16":
            bf16_rate = per_s
    print(
        f"   feeding it needs {bf16_rate:,.0f} decoded faces/s: "
        f"{bf16_rate / decode_rate_1024:.1f} cores at this machine's "
        f"{decode_rate_1024:.0f} 1024x1024 JPEGs/s per core ({os.cpu_count()} cores here)"
    )
    bench_gpu_end_to_end(folder, faces, batch_size)


def gpu_rate(model, images, bf16: bool, iters: int = 20) -> float:
    import torch

    from facetokens.vqgan import encode_batch

    for _ in range(3):
        encode_batch(model, images, "cuda", bf16)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        codes = encode_batch(model, images, "cuda", bf16)
    codes.cpu()
    return iters * len(images) / (time.perf_counter() - start)


def bench_gpu_end_to_end(folder: Path, faces: int, batch_size: int) -> None:
    from safetensors.torch import save_file

    from facetokens.config import TokenizeConfig, cpu_cores
    from facetokens.tokenize_images import tokenize_images
    from facetokens.vqgan import FFHQ_CONFIG, VQGAN
    from facetokens.vqgan_files import SAFETENSORS_CONFIG_KEY

    ckpt = folder / "ffhq_random.safetensors"
    model = VQGAN(FFHQ_CONFIG)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(ckpt),
        metadata={SAFETENSORS_CONFIG_KEY: json.dumps(FFHQ_CONFIG.to_dict())},
    )
    unique = write_photos(folder / "gpu_faces", (1024, 1024), 64, "g")
    paths = [unique[i % len(unique)] for i in range(faces)]  # decoded every time; files repeat to save set-up time
    corpus = write_corpus(folder / "gpu", paths)
    workers = max(1, cpu_cores() - 1)
    summary = tokenize_images(
        corpus,
        folder / "gpu_shards",
        vqgan_config=None,
        vqgan_ckpt=ckpt,
        config=TokenizeConfig(gpus=1, batch_size=batch_size, loader_workers=workers, precision="bf16", shard_size=256),
        progress=False,
    )
    print(
        f"   tokenize_images end to end, {faces} 1024x1024 JPEGs, bf16, {workers} loader workers: "
        f"{summary['faces_per_s']:,.0f} faces/s"
        f" (bf16/fp32 code agreement on the first batch: {summary['bf16_agreement']})"
    )


# ----------------------------------------------------------------------------- 5. against the naive loop
def copies(paths: list[Path], count: int, folder: Path) -> list[Path]:
    """`count` files cycling through `paths` (same bytes, so the same decoding work), each its own name."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        source = paths[i % len(paths)]
        target = folder / f"{source.stem}_copy{i:05d}{source.suffix}"
        shutil.copyfile(source, target)
        out.append(target)
    return out


def naive_child(vqgan_config: str, vqgan_ckpt: str, listing: str, out: str) -> None:
    """The naive loop in a plain process (no process settings), model loading included: read each face
    (`prepare_face`, so that both sides see the same pixels), encode it alone, take its codes; JSON to `out`."""
    import torch

    from facetokens.images import prepare_face
    from facetokens.vqgan_files import load_vqgan

    model = load_vqgan(Path(vqgan_config), Path(vqgan_ckpt), with_decoder=False)
    codes = {}
    with torch.no_grad():
        for path in Path(listing).read_text().splitlines():
            x = torch.from_numpy(prepare_face(path)).permute(2, 0, 1)[None].float() / 127.5 - 1
            codes[Path(path).name] = model.encode_to_codes(x)[0].tolist()
    Path(out).write_text(json.dumps(codes))


def bench_vs_naive(folder: Path, big: list[Path], small: list[Path], vqgan: dict, pairs: int, sizes: list[int]) -> None:
    """Both sides as a user runs them: `cli.py tokenize-images --gpus 0` (its defaults and process settings)
    and the naive loop, each a fresh Python process (interpreter and torch start-up counted on both)."""
    import shutil
    import subprocess

    from benchmarks.pairs import interleaved, load_average, ratio_line
    from facetokens.config import TokenizeConfig
    from facetokens.shards import read_samples

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OMP_", "GOMP_"))}
    defaults = TokenizeConfig(gpus=0)
    print(
        f"\n5. `cli.py tokenize-images --gpus 0` with its defaults (batch {defaults.batch_size}, "
        f"{defaults.loader_workers} loader workers) against the naive loop, tiny VQGAN, each a fresh process, "
        f"{pairs} interleaved pairs, load {load_average()}"
    )
    for count in sizes:
        where = folder / f"set{count}"
        paths = copies(big, count // 2, where) + copies(small, count - count // 2, where)
        corpus = write_corpus(folder / f"corpus{count}", paths)
        listing = folder / f"list{count}.txt"
        listing.write_text("\n".join(map(str, paths)))

        def ours(corpus=corpus):
            shutil.rmtree(folder / "shards", ignore_errors=True)
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "cli.py"),
                    "tokenize-images",
                    "--corpus",
                    str(corpus),
                    "--out",
                    str(folder / "shards"),
                    "--vqgan-config",
                    str(vqgan["config"]),
                    "--vqgan-ckpt",
                    str(vqgan["ckpt"]),
                    "--gpus",
                    "0",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            return time.perf_counter() - start

        def theirs(listing=listing):
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--naive-child",
                    str(vqgan["config"]),
                    str(vqgan["ckpt"]),
                    str(listing),
                    str(folder / "naive.json"),
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            return time.perf_counter() - start

        timings = interleaved(ours, theirs, pairs)
        ours_codes = {meta["image"]: codes.tolist() for meta, codes in read_samples(folder / "shards")}
        naive = json.loads((folder / "naive.json").read_text())
        same = sum(ours_codes[name] == codes for name, codes in naive.items())
        print(ratio_line(f"{count:5d} faces", timings, goal=1.0 if count < 100 else 1.5))
        print(f"        codes identical for {same} of {count} faces")


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=48, help="faces for the CPU end-to-end run (half of each size)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--loader-workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of encoder-alone and end-to-end runs")
    parser.add_argument("--decode-images", type=int, default=24, help="images of each size for the decode benchmark")
    parser.add_argument("--gpu-faces", type=int, default=2048)
    parser.add_argument("--gpu-batch-size", type=int, default=128)
    parser.add_argument("--vs-naive", action="store_true", help="only section 5: the command against the naive loop")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved pairs of --vs-naive")
    parser.add_argument("--sizes", default="48,1000", help="faces of each --vs-naive comparison")
    parser.add_argument("--naive-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_child:
        naive_child(*args.naive_child)
        return

    import torch

    from samples.tiny_vqgan import write_tiny_vqgan

    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.vs_naive:
            big = write_photos(folder / "faces", (1024, 1024), 12, "big")
            small = write_photos(folder / "faces", (178, 218), 12, "small")
            bench_vs_naive(
                folder,
                big,
                small,
                write_tiny_vqgan(folder / "vqgan"),
                args.pairs,
                [int(n) for n in args.sizes.split(",")],
            )
            return
        big = write_photos(folder / "faces", (1024, 1024), max(args.decode_images, args.faces // 2), "big")
        small = write_photos(folder / "faces", (178, 218), max(args.decode_images, args.faces // 2), "small")
        decode = bench_decode({"1024x1024": big[: args.decode_images], "178x218": small[: args.decode_images]})
        vqgan = write_tiny_vqgan(folder / "vqgan")
        faces = big[: args.faces // 2] + small[: args.faces - args.faces // 2]
        bench_end_to_end(folder, faces, vqgan, args.batch_size, args.loader_workers, args.rounds)
        if torch.cuda.is_available():
            bench_gpu(folder, decode["1024x1024"][0], args.gpu_faces, args.gpu_batch_size)
        else:
            print("\n4. GPU: no CUDA device here; run on a GPU machine for the full-size encoder figures")


if __name__ == "__main__":
    main()
