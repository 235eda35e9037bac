"""Prepare one face for the VQGAN: open, crop to its box, square it, resize to 256x256 RGB.

Policy (the same for every dataset):
  * Pixels as stored in the file; boxes are `[left, top, right, bottom]` in those pixels (no EXIF
    rotation: the annotation tools of our datasets read the stored pixels). A box is clamped to the
    image; a box with nothing left inside the image is a reject (`bad_box`).
  * Non-square faces become square by *growing* the short side around the face's centre: the
    smallest square that holds the whole box, moved to lie inside the image. Where the image is too
    narrow for it, the largest square that fits, centred on the box. Without a box this is a centre
    crop of the whole picture (CelebA's 178x218 keeps its central 178x178): nothing is stretched
    and no padding is invented.
  * Modes: grey, palette, CMYK, YCbCr... convert to RGB; transparency is composited on white;
    16-bit and float grey are scaled to 8 bits (Pillow's own conversion would clip them).
  * Resize: Pillow's antialiased bicubic, straight from the crop box. Large JPEGs are first
    decoded at 1/2, 1/4 or 1/8 scale (`Image.draft`, DCT-domain) as long as the crop stays at least
    256 px: the 1024x1024 photos decode ~4x faster.

Failures are data: `prepare_face` raises `BadImage(reason, detail)` and `try_prepare_face` returns it.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 256
RESAMPLE = Image.Resampling.BICUBIC
WHITE = (255, 255, 255)
Image.MAX_IMAGE_PIXELS = 16384 * 16384  # a 268M-pixel image is refused as `too_large`


class BadImage(Exception):
    """An image that cannot be prepared: `reason` is a short code, `detail` the message."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Reject:
    reason: str  # missing | unreadable | not_an_image | corrupt | too_large | bad_box
    detail: str


def square_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, float, float, float]:
    """The square crop for a (clamped) box inside a width x height image; see the module docstring."""
    left, top, right, bottom = box
    side = min(max(right - left, bottom - top), width, height)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0 = min(max(cx - side / 2, 0), width - side)
    y0 = min(max(cy - side / 2, 0), height - side)
    return x0, y0, x0 + side, y0 + side


def clamp_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    if box is None:
        return 0, 0, width, height
    left, top, right, bottom = (int(v) for v in box)
    clamped = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if clamped[2] <= clamped[0] or clamped[3] <= clamped[1]:
        raise BadImage("bad_box", f"box {list(box)} has no pixels inside the {width}x{height} image")
    return clamped


def _draft(image: Image.Image, crop_side: float, size: int) -> float:
    """Ask a JPEG to decode at a reduced scale that keeps the crop >= size px; return the scale used."""
    if image.format != "JPEG" or crop_side < 2 * size:
        return 1.0
    width, height = image.size
    factor = crop_side / size
    requested = (max(1, math.ceil(width / factor)), max(1, math.ceil(height / factor)))
    drafted = image.draft(None, requested)
    return drafted[1][2] / width if drafted else 1.0


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB (alpha on white, 16-bit/float scaled rather than clipped)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_to_8bit(np.asarray(image)), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8bit(values: np.ndarray) -> np.ndarray:
    """16-bit or float grey as 0..255: float in [0, 1] and integers above 255 (16-bit) are rescaled."""
    is_float = values.dtype.kind == "f"
    values = values.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if is_float and peak <= 1.0:
        values = values * 255.0
    elif peak > 255:
        values = values * (255.0 / 65535.0)
    return np.clip(values, 0, 255).round().astype(np.uint8)


def prepare_face(path: Path | str, box=None, size: int = SIZE) -> np.ndarray:
    """The face at `path` (cropped to `box`) as a (size, size, 3) uint8 RGB array; BadImage if it cannot be."""
    with opened(path) as image:
        return _prepare_open(image, box, size)


def face_file_size(path: Path | str, box=None) -> tuple[int, int]:
    """(width, height) of the image file at `path`, from its header: the checks of `prepare_face` short of decoding
    the pixels (missing, not an image, too large, a truncated JPEG, a box outside the image); BadImage if one fails."""
    with opened(path) as image:
        _refuse_truncated_jpeg(image)
        clamp_box(box, *image.size)
        return image.size


@contextlib.contextmanager
def opened(path: Path | str) -> Iterator[Image.Image]:
    """`Image.open(path)`, with every failure while it is open turned into BadImage(reason, detail)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except BadImage:
        raise
    except FileNotFoundError as e:
        raise BadImage("missing", f"{path}: {e.strerror}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage("too_large", f"{path}: {e}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not_an_image", f"{path}: not an image Pillow can read") from None
    except IsADirectoryError as e:
        raise BadImage("unreadable", f"{path}: {e.strerror}") from None
    except PermissionError as e:
        raise BadImage("unreadable", f"{path}: {e.strerror}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as e:
        raise BadImage("corrupt", f"{path}: {type(e).__name__}: {e}") from None


def _prepare_open(image: Image.Image, box, size: int) -> np.ndarray:
    width, height = image.size
    _refuse_truncated_jpeg(image)
    crop = square_box(clamp_box(box, width, height), width, height)
    scale = _draft(image, crop[2] - crop[0], size)
    image.load()  # decodes; raises on truncated or corrupt data
    scaled = tuple(min(v * scale, limit) for v, limit in zip(crop, image.size * 2))
    rgb = to_rgb(image)
    return np.asarray(rgb.resize((size, size), RESAMPLE, box=scaled), dtype=np.uint8)


def _refuse_truncated_jpeg(image: Image.Image) -> None:
    """A sequential JPEG whose file is smaller than its blocks could ever be: the data ends early.

    libjpeg pads a scan that ends too soon with flat grey and Pillow raises nothing, so a header
    claiming 12000x12000 over 250x250 data would become a grey face. Each 8x8 block of a
    Huffman-coded sequential scan costs at least 2 bits (a DC code and an end-of-block code), which
    gives a bound that no complete file is under. Progressive files (end-of-band runs) are not checked.
    """
    layers = getattr(image, "layer", None)
    if image.format != "JPEG" or not layers or image.info.get("progressive"):
        return
    h_max, v_max = max(h for _, h, _, _ in layers), max(v for _, _, v, _ in layers)
    width, height = image.size
    blocks = sum(
        math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(math.ceil(height * v / v_max) / 8)
        for _, h, v, _ in layers
    )
    file_bytes = os.fstat(image.fp.fileno()).st_size if hasattr(image.fp, "fileno") else image.fp.getbuffer().nbytes
    if file_bytes * 8 < 2 * blocks:
        raise BadImage(
            "corrupt",
            f"{image.filename}: truncated JPEG: the header says {width}x{height} "
            f"({blocks:,} blocks) but the file holds only {file_bytes:,} bytes",
        )


def try_prepare_face(path: Path | str, box=None, size: int = SIZE) -> tuple[np.ndarray | None, Reject | None]:
    """`prepare_face` with failures returned as data: (array, None) or (None, Reject)."""
    try:
        return prepare_face(path, box, size), None
    except BadImage as e:
        return None, Reject(e.reason, e.detail)


def plain_prepare(path: Path | str, size: int = SIZE) -> np.ndarray:
    """The straightforward way (open, convert, resize): the benchmark's baseline."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size, size), RESAMPLE), dtype=np.uint8)
