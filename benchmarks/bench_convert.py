"""Convert benchmark: full-size annotation files per dataset, converter vs the bare parse.

For each dataset the fixture writer produces annotation files at the official size (images as
empty files), then two fresh processes are timed: the bare parse of the same files with
pandas / scipy / json (`baseline_parse`), and the converter. Goal: convert <= 3x parse, peak RSS
< 1.5 GB. Finally all datasets are converted together with `convert all`, end to end.

    python benchmarks/bench_convert.py                    # every dataset (needs ~2 GB of disk, minutes)
    python benchmarks/bench_convert.py --datasets celeba,cacd
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_RATIO = 3.0
GOAL_RSS_MB = 1536


def child(job: str, name: str, root: str, out: str) -> None:
    """Runs in a fresh process: time one job, print {seconds, peak_rss_mb}."""
    import pandas  # noqa: F401 -- pyarrow imports it on first use: an import cost, not conversion work

    from common.memory import peak_rss_mb
    from converters import convert
    from converters.commands import convert_all
    from converters.fixtures import writer

    start = time.perf_counter()
    result = {}
    if job == "baseline":
        writer(name).baseline_parse(Path(root))
    elif job == "convert":
        result = {"rows": convert(name, Path(root), Path(out))["rows"]}
    elif job == "all":
        result = {"rows": sum(r.get("rows", 0) for r in convert_all(Path(root), Path(out)))}
    seconds = time.perf_counter() - start
    print(json.dumps({**result, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def run_child(job: str, name: str, root: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", job, name, str(root), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise SystemExit(f"{job} {name} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from converters import DATASETS
    from converters.fixtures import writer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    names = [n for n in args.datasets.split(",") if n]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_convert_"))
    print(
        f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
        f"python {platform.python_version()}"
    )
    print(f"{'dataset':15s} {'records':>9s} {'parse s':>8s} {'convert s':>9s} {'ratio':>6s} {'peak MB':>8s}  goal")
    try:
        for name in names:
            root = work / "datasets" / name
            if not root.exists():
                writer(name).write_full_size(root)
            base = run_child("baseline", name, root, work / "out")
            conv = run_child("convert", name, root, work / "out")
            ratio = conv["seconds"] / base["seconds"]
            ok = ratio <= GOAL_RATIO and conv["peak_rss_mb"] < GOAL_RSS_MB
            print(
                f"{name:15s} {conv['rows']:>9,} {base['seconds']:>8.2f} {conv['seconds']:>9.2f} {ratio:>6.2f} "
                f"{conv['peak_rss_mb']:>8.0f}  {'met' if ok else 'MISSED'}",
                flush=True,
            )
        if len(names) > 1:
            whole = run_child("all", "all", work / "datasets", work / "out_all")
            print(
                f"{'convert all':15s} {whole['rows']:>9,} {'':>8s} {whole['seconds']:>9.2f} {'':>6s} "
                f"{whole['peak_rss_mb']:>8.0f}"
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
