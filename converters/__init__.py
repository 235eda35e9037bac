"""Dataset converters: each dataset as downloaded -> rows of one record schema (`converted/NAME.parquet`).

    registry.py   the dataset names (registry order) and each one's converter and options
    commands.py   `convert` (one dataset) and `convert all` (every dataset found under a folder)
    datasets/     one module per dataset: its registry key (`name`) and its parsing, nothing else
    helpers/      what the datasets share: the Converter base and its bookkeeping, the dataset folder
                  (DatasetRoot), readers (tables, .mat, .npy, caption files, CelebA's shared lists),
                  column builders, colour names, the record schema and the converted layout
    fixtures/     one writer per dataset (same name): small copies in the real format, for tests and the demo

Adding a dataset is one module `datasets/<name>.py`, one manifest `manifests/<name>.yaml`, one fixture
writer and its name in `registry.DATASETS` (docs/adding-a-dataset.md).
"""

from __future__ import annotations

from .commands import convert, convert_all
from .registry import DATASETS, converter, converter_class, parse_options

__all__ = ["DATASETS", "convert", "convert_all", "converter", "converter_class", "parse_options"]
