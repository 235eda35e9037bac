"""preview: decode a sample of tokenized faces back through the VQGAN, next to the original and its texts.

    python cli.py preview --shards shards/ --out preview/ --vqgan-config project.yaml --vqgan-ckpt last.ckpt

Writes `OUT/index.html` (original 256x256 crop as the tokenizer saw it | reconstruction from the
stored codes | image_id, dataset, split, texts | PSNR and mean absolute error), the images under
`OUT/images/`, and `OUT/grid.png` (original and reconstruction side by side, four pairs per row).
The originals are found through the corpus that `SHARDS/index.json` names (or `corpus=`).
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import UserError
from common.fileio import atomic_path
from common.locks import folder_lock
from common.progress import Progress
from corpus import layout

from . import shards
from .images import SIZE, try_prepare_face
from .vqgan_files import load_vqgan

log = logging.getLogger(__name__)

PAIRS_PER_ROW = 4
DECODE_BATCH = 8


def preview(
    shards_dir: Path,
    out: Path,
    *,
    vqgan_config: Path | None,
    vqgan_ckpt: Path,
    samples: int = 16,
    corpus: Path | None = None,
    progress: bool = False,
) -> dict:
    """Write OUT/index.html and OUT/grid.png for `samples` faces spread over the shards; returns a summary.

    progress -- show a bar of the faces decoded (plain lines when stderr is not a terminal)
    """
    shards_dir = Path(shards_dir)
    if samples < 1:
        raise UserError(f"--samples must be at least 1 (got {samples})")
    if not shards.tar_urls(shards_dir):
        raise UserError(f"{shards_dir}: no shard-*.tar files; run tokenize-images first")
    with folder_lock(out, "preview"):  # one writer: two runs would mix their faces and pages
        return _preview(shards_dir, Path(out), vqgan_config, vqgan_ckpt, samples, corpus, progress)


def _preview(shards_dir: Path, out: Path, vqgan_config, vqgan_ckpt, samples: int, corpus, progress: bool) -> dict:
    picked = pick_samples(shards_dir, samples)
    model = load_vqgan(vqgan_config, vqgan_ckpt, with_decoder=True)
    check_vqgan_fits(model.config, shards.geometry(shards_dir), vqgan_ckpt, shards_dir)
    with Progress(len(picked), "preview", "face", enabled=progress) as bar:
        reconstructions = decode_all(model, [codes for _, codes in picked], bar)
    originals = find_originals([meta for meta, _ in picked], corpus or corpus_of(shards_dir))
    rows = [
        face_row(i, meta, rec, originals.get(meta["image_id"]), out)
        for i, ((meta, _), rec) in enumerate(zip(picked, reconstructions))
    ]
    write_html(rows, out / "index.html", shards_dir)
    write_grid(rows, out / "grid.png")
    psnrs = [r["psnr"] for r in rows if r["psnr"] is not None]
    return {
        "html": str(out / "index.html"),
        "grid": str(out / "grid.png"),
        "faces": len(rows),
        "mean_psnr": round(float(np.mean(psnrs)), 2) if psnrs else None,
        "mean_abs_error": round(float(np.mean([r["mae"] for r in rows if r["mae"] is not None])), 2) if psnrs else None,
        "rows": [
            {
                "image_id": r["meta"]["image_id"],
                "original": r["files"][0],
                "reconstruction": r["files"][1],
                "texts": [t["text"] for t in r["meta"].get("texts", [])],
            }
            for r in rows
        ],
    }


def pick_samples(shards_dir: Path, samples: int) -> list[tuple[dict, np.ndarray]]:
    """Faces from evenly spaced shards first, topped up from the start: deterministic, spread over the corpus."""
    urls = [Path(u) for u in shards.tar_urls(shards_dir)]
    spread = sorted({round(i * (len(urls) - 1) / max(samples - 1, 1)) for i in range(min(samples, len(urls)))})
    per_shard = math.ceil(samples / len(spread))
    picked: dict[str, tuple[dict, np.ndarray]] = {}
    passes = [(urls[k], per_shard) for k in spread] + [(url, None) for url in urls]
    for url, limit in passes:
        for meta, codes in shards.read_samples_of(url, limit):
            if len(picked) >= samples:
                return list(picked.values())
            picked.setdefault(meta["image_id"], (meta, codes))
    return list(picked.values())


def decode_all(model, codes: list[np.ndarray], progress: Progress | None = None) -> list[np.ndarray]:
    import torch

    images = []
    for start in range(0, len(codes), DECODE_BATCH):
        batch = torch.from_numpy(np.stack(codes[start : start + DECODE_BATCH]))
        decoded = model.decode_codes(batch)
        images.extend((decoded.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
        if progress is not None:
            progress.update(len(batch), "decode")
    return images


def check_vqgan_fits(vqgan, geometry: dict | None, vqgan_ckpt: Path, shards_dir: Path) -> None:
    """The VQGAN must be the shards' geometry: as many codes per face, as large a codebook."""
    if geometry is None:
        return
    ours = {"codes_per_face": vqgan.codes_per_image, "codebook_size": vqgan.n_embed}
    wrong = [f"{k} {v} (the shards: {geometry[k]})" for k, v in ours.items() if geometry.get(k) not in (None, v)]
    if wrong:
        raise UserError(f"--vqgan-ckpt {vqgan_ckpt}: not the VQGAN of {shards_dir}: {'; '.join(wrong)}")


def corpus_of(shards_dir: Path) -> Path | None:
    """The corpus that SHARDS/index.json names (SHARDS/SPLIT/ given: the index one level up)."""
    corpus = (shards.read_index(shards_dir) or {}).get("corpus")
    return Path(corpus) if corpus else None


def find_originals(metas: list[dict], corpus: Path | None) -> dict[str, tuple[str, list | None]]:
    """image_id -> (file, box) from the corpus image table; empty when the corpus is not at hand."""
    if corpus is None or not layout.images_file(corpus).is_file():
        log.warning("corpus not found (%s): the preview shows reconstructions only", corpus)
        return {}
    wanted = {m["image_id"] for m in metas}
    table = layout.read_images(corpus, ["image_id", "path", "box"])
    return {
        i: (p, b) for i, p, b in zip(*(table.column(c).to_pylist() for c in ("image_id", "path", "box"))) if i in wanted
    }


def face_row(i: int, meta: dict, reconstruction: np.ndarray, original: tuple | None, out: Path) -> dict:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    row = {"meta": meta, "recon": reconstruction, "orig": None, "psnr": None, "mae": None, "note": ""}
    Image.fromarray(reconstruction).save(images / f"{i:04d}-recon.png")
    if original is not None:
        array, reject = try_prepare_face(original[0], original[1], SIZE)
        if array is None:
            row["note"] = f"original unreadable: {reject.reason}"
        else:
            row.update(orig=array, **reconstruction_error(array, reconstruction))
            Image.fromarray(array).save(images / f"{i:04d}-orig.png")
    else:
        row["note"] = "original not found"
    row["files"] = (f"images/{i:04d}-orig.png" if row["orig"] is not None else None, f"images/{i:04d}-recon.png")
    return row


def reconstruction_error(original: np.ndarray, reconstruction: np.ndarray) -> dict:
    diff = original.astype(np.float64) - reconstruction.astype(np.float64)
    mse = float(np.mean(diff**2))
    return {
        "psnr": round(10 * math.log10(255.0**2 / mse), 2) if mse > 0 else float("inf"),
        "mae": round(float(np.mean(np.abs(diff))), 2),
    }


def write_html(rows: list[dict], path: Path, shards_dir: Path) -> None:
    body = "\n".join(html_row(r) for r in rows)
    psnrs = [r["psnr"] for r in rows if r["psnr"] is not None]
    mean = f"mean PSNR {np.mean(psnrs):.2f} dB over {len(psnrs)} faces" if psnrs else "no originals found"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>VQGAN preview: {html.escape(str(shards_dir))}</title>
<style>body{{font-family:sans-serif;margin:2em}} td{{vertical-align:top;padding:6px;border-bottom:1px solid #ddd}}
img{{width:192px;height:192px;image-rendering:auto}} .t{{max-width:40em}} .k{{color:#666}}</style></head>
<body><h1>VQGAN preview</h1><p>{html.escape(str(shards_dir))}: {len(rows)} faces; {mean}.
PSNR and mean absolute error are computed on 0-255 RGB between the 256x256 crop and the reconstruction.</p>
<table><tr><th>original</th><th>reconstruction</th><th>face and texts</th><th>error</th></tr>
{body}
</table></body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")


def html_row(row: dict) -> str:
    meta, (orig, recon) = row["meta"], row["files"]
    texts = "".join(
        f"<li><span class=k>{html.escape(t['kind'])} ({html.escape(t['dataset'])}):</span> "
        f"{html.escape(t['text'])}</li>"
        for t in meta.get("texts", [])
    )
    error = f"PSNR {row['psnr']} dB<br>MAE {row['mae']}" if row["psnr"] is not None else html.escape(row["note"])
    original = f'<img src="{orig}" alt="original">' if orig else html.escape(row["note"])
    return (
        f'<tr><td>{original}</td><td><img src="{recon}" alt="reconstruction"></td>'
        f"<td class=t><b>{html.escape(meta['image_id'])}</b> &middot; {html.escape(meta['dataset'])} &middot; "
        f"{html.escape(meta['split'])}<ul>{texts}</ul></td><td>{error}</td></tr>"
    )


def write_grid(rows: list[dict], path: Path) -> None:
    """Original | reconstruction pairs, PAIRS_PER_ROW per row (grey where the original is missing)."""
    n_rows = math.ceil(len(rows) / PAIRS_PER_ROW)
    grid = Image.new("RGB", (PAIRS_PER_ROW * 2 * SIZE, n_rows * SIZE), (128, 128, 128))
    for i, row in enumerate(rows):
        x, y = (i % PAIRS_PER_ROW) * 2 * SIZE, (i // PAIRS_PER_ROW) * SIZE
        if row["orig"] is not None:
            grid.paste(Image.fromarray(row["orig"]), (x, y))
        grid.paste(Image.fromarray(row["recon"]), (x + SIZE, y))
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
