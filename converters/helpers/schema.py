"""The one definition of a converted record (docs/formats.md, "`convert` -> `CONVERTED/`").

Every converter produces rows of `RECORD_SCHEMA`; the corpus reads the same schema back.
Two columns extend the nine of the project's design, both nullable:
  person     -- the person's identity inside the dataset (CelebA identity, CACD celebrity id,
                AFAD person id, IMDb celeb id...), used by build-corpus to split by person.
  origin_id  -- the image_id of the picture this face was derived from in another dataset
                (a CelebA-HQ face -> `celeba/NNNNNN`), used by build-corpus to keep splits leak-free.
"""

from __future__ import annotations

import pyarrow as pa

ATTRIBUTE_TYPE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
BOX_TYPE = pa.list_(pa.int32())

RECORD_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("image", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("box", BOX_TYPE),
        pa.field("split", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("attributes", ATTRIBUTE_TYPE),
        pa.field("source", pa.string(), nullable=False),
        pa.field("person", pa.string()),
        pa.field("origin_id", pa.string()),
    ]
)

REJECT_FIELDS = ("source", "reason", "detail")
