"""Evaluation benchmark: FID/IS feature extraction (torch-fidelity's InceptionV3, 256² faces resized to 299 inside)
in faces per second, on the CPU and, where present, on CUDA; and the reading of real faces as tokenize-images
reads them (decode, crop, resize to 256), which feeds it.

    python benchmarks/bench_evaluate.py                          # random weights in the real file's shapes
    python benchmarks/bench_evaluate.py --inception-weights pt_inception-2015-12-05-6726825d.pth
    python benchmarks/bench_evaluate.py --faces 64 --batch 16 --threads 2

The network's cost does not depend on its values, so random weights time the same as the real file.
The load average is printed so that figures from a shared machine can be judged.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer import fid


def faces_per_second(network, faces: list[np.ndarray], device: str, batch: int) -> float:
    fid.extract(network, faces[:batch], device, batch)  # warm-up (allocations, cuDNN choice)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fid.extract(network, faces, device, batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(faces) / (time.perf_counter() - start)


def reading_per_second(faces: list[np.ndarray], folder: Path) -> float:
    """prepare_face on 1024² JPEGs (FFHQ/CelebA-HQ size): decode with draft, square, resize to 256."""
    from PIL import Image

    from facetokens.images import SIZE, prepare_face

    paths = []
    for n, face in enumerate(faces[:16]):
        path = folder / f"{n}.jpg"
        Image.fromarray(face).resize((1024, 1024)).save(path, quality=90)
        paths.append(path)
    start = time.perf_counter()
    for path in paths:
        prepare_face(path, None, SIZE)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inception-weights", type=Path, help="the real file (default: random weights, same shapes)")
    parser.add_argument("--faces", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, help="torch CPU threads [default: torch's]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    rng = np.random.default_rng(0)
    faces = [(rng.random((256, 256, 3)) * 255).astype(np.uint8) for _ in range(args.faces)]
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.inception_weights
        if weights is None:
            from samples.random_inception import write_random_inception

            weights = write_random_inception(Path(tmp) / fid.WEIGHTS_NAME)
        print(f"reading real faces (1024² JPEG -> 256², one core): {reading_per_second(faces, Path(tmp)):.1f} faces/s")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            network = fid.load_inception(weights, device)
            batches = [args.batch] if device == "cpu" else [args.batch, 64]
            for batch in batches:
                count = args.faces if device == "cpu" else max(args.faces, 8 * batch)
                rate = faces_per_second(network, (faces * (count // len(faces) + 1))[:count], device, batch)
                print(
                    f"FID feature extraction, {device}, fp32, batch {batch}: {rate:.1f} faces/s "
                    f"({count} faces; extraction alone for 1,000 generated + 1,000 real: {2000 / rate / 60:.1f} min)"
                )


if __name__ == "__main__":
    main()
