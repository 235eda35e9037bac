import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.process import configure_process
from facetokens.config import TokenizeConfig, cpu_cores

REPO = Path(__file__).resolve().parents[1]
SHOW = "import cli, os; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('MALLOC_MMAP_MAX_'))"


def cli_settings(**env) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OMP_", "GOMP_", "TALK2FACE_"))}
    return subprocess.run(
        [sys.executable, "-c", SHOW], cwd=REPO, env={**clean, **env}, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_the_cli_sets_a_passive_openmp_wait_policy_unless_the_user_chose_one():
    assert cli_settings() == "PASSIVE None"  # mallopt changes the process, not the environment children inherit
    assert cli_settings(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE None"
    assert cli_settings(TALK2FACE_PROCESS_SETTINGS="0") == "None None"


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the allocator settings are glibc's mallopt, applied on Linux only (elsewhere the CLI leaves them)",
)
def test_allocator_settings_apply_only_when_the_user_set_none():
    assert "mallopt M_MMAP_MAX=0" in configure_process({})
    for users in (
        {"MALLOC_MMAP_MAX_": "65536"},
        {"MALLOC_TRIM_THRESHOLD_": "0"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"},
        {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},
    ):
        assert not any(s.startswith("mallopt") for s in configure_process(dict(users))), users
    environ = {"GOMP_SPINCOUNT": "1000"}
    assert "OMP_WAIT_POLICY=PASSIVE" not in configure_process(environ) and "OMP_WAIT_POLICY" not in environ
    assert configure_process({"TALK2FACE_PROCESS_SETTINGS": "0"}) == []


def test_tokenize_defaults_on_the_cpu_have_no_loader_process_and_a_batch_for_the_cores():
    config = TokenizeConfig(gpus=0)
    assert config.loader_workers == 0 and config.batch_size == min(16, max(4, 4 * cpu_cores()))
    chosen = TokenizeConfig(gpus=0, batch_size=3, loader_workers=2)
    assert (chosen.batch_size, chosen.loader_workers) == (3, 2)
