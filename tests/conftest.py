import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from converters import convert
from converters.helpers.converted import parquet_path, rejects_path, summary_path
from converters.helpers.schema import RECORD_SCHEMA


class Converted:
    """What one conversion wrote: rows (dicts), rejects, summary; checks the reconciliation."""

    def __init__(self, name: str, out: Path):
        table = pq.read_table(parquet_path(out, name))
        assert table.schema.equals(RECORD_SCHEMA), table.schema
        self.rows = table.to_pylist()
        self.rejects = [json.loads(line) for line in rejects_path(out, name).read_text().splitlines()]
        self.summary = json.loads(summary_path(out, name).read_text())
        assert self.summary["records_in"] == len(self.rows) + len(self.rejects)
        assert self.summary["rows"] == len(self.rows)

    def reasons(self) -> dict:
        out = {}
        for r in self.rejects:
            out.setdefault(r["reason"], []).append(r["source"])
        return out


@pytest.fixture
def run_convert(tmp_path):
    """run_convert(name, root, *options) -> Converted, writing into a fresh folder."""
    counter = iter(range(1000))

    def run(name: str, root: Path, *options: str) -> Converted:
        out = tmp_path / f"out{next(counter)}"
        convert(name, root, out, list(options))
        return Converted(name, out)

    return run
