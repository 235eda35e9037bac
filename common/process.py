"""Process settings the command line applies at start: glibc's allocator thresholds and OpenMP's wait policy.

    configure_process()          # cli.py, at import: before any command imports torch

Why (measured with benchmarks/bench_process.py; figures in docs/performance.md):
  * glibc serves every allocation above its mmap threshold (at most 32 MiB, dynamic from 128 KiB) with a
    fresh mmap and unmaps it on free, so each large activation, logit or gradient tensor of a training or
    tokenize-images step is first-touched page by page again: the kernel's page-fault handling took most
    of the CPU. `M_MMAP_MAX = 0` keeps them on the heap and a high `M_TRIM_THRESHOLD` stops the heap's top
    from being given back after every step, so the same pages are reused. The cost: freed memory stays
    with the process (its resident size stays at its peak instead of falling between steps).
  * OpenMP threads that finish early spin while waiting for the others. On a machine whose cores are
    shared (or oversubscribed), a spinning thread takes the core the late thread needs; `PASSIVE` makes
    waiting threads sleep. On an idle machine with small operations, ACTIVE can be a little faster.

The user's own environment wins: a setting is left alone when the user set it (any `MALLOC_*_` variable
or a `glibc.malloc` tunable; `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT`), when another allocator is preloaded,
and all of them are off with `TALK2FACE_PROCESS_SETTINGS=0`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

SWITCH = "TALK2FACE_PROCESS_SETTINGS"  # "0" turns every setting off
# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
MALLOC_SETTINGS = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 1 << 30}  # no mmap'd chunks; give back only above 1 GiB free
MALLOC_ENVIRONMENT = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_ARENA_MAX",
    "MALLOC_ARENA_TEST",
)
OPENMP_ENVIRONMENT = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def configure_process(environ: dict[str, str] | None = None) -> list[str]:
    """Apply the settings the environment leaves to us; returns what was set (for logs and tests)."""
    environ = os.environ if environ is None else environ
    if environ.get(SWITCH, "1") == "0":
        return []
    applied = []
    if not any(name in environ for name in OPENMP_ENVIRONMENT):
        if "torch" in sys.modules:
            log.debug("OpenMP wait policy not set: torch was imported before the process settings")
        else:
            environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read once, when torch loads OpenMP; children inherit it
            applied.append("OMP_WAIT_POLICY=PASSIVE")
    if _malloc_is_ours(environ) and _mallopt(MALLOC_SETTINGS):
        applied += [
            f"mallopt M_MMAP_MAX={MALLOC_SETTINGS[M_MMAP_MAX]}",
            f"mallopt M_TRIM_THRESHOLD={MALLOC_SETTINGS[M_TRIM_THRESHOLD]}",
        ]
    log.debug("process settings: %s", ", ".join(applied) or "none")
    return applied


def _malloc_is_ours(environ) -> bool:
    """glibc malloc, with no setting of the user's and no other allocator preloaded."""
    if any(name in environ for name in MALLOC_ENVIRONMENT) or "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
        return False
    return not any(name in environ.get("LD_PRELOAD", "") for name in OTHER_ALLOCATORS)


def _mallopt(settings: dict[int, int]) -> bool:
    """mallopt() each setting; False (and nothing changed) where this is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only (musl has no mallopt thresholds)
        return False
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings.items())
