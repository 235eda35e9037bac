"""The corpus in memory between deciding and writing: what the writers, the statistics and the card read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from converters.helpers.converted import ConvertedSet

from .hygiene import Hygiene
from .leakfree import SplitResolution


@dataclass
class Corpus:
    """Everything the writers need: the rows with their codes and the decisions taken about them."""

    inputs: ConvertedSet
    table: pa.Table  # all converted rows, registry order (text as converted)
    dataset_codes: np.ndarray  # per row: index into converters.DATASETS
    image_codes: np.ndarray  # per row: code of its image_id
    hygiene: Hygiene
    splits: SplitResolution
    images: pa.Table  # IMAGE_SCHEMA, sorted by image_id
    options: dict
