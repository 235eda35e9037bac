"""The demo's report: one self-contained folder (`report.html` + `report_files/`) a person opens in a browser.

Every picture is copied into `report_files/`, so the folder can be moved or zipped as it is; the page
uses no script and no network.
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from common.fileio import atomic_path

REPORT_FILE = "report.html"
ASSETS = "report_files"
NONSENSE = (
    "This is a tiny model trained for a few minutes on a few hundred sample faces, with a randomly initialised "
    "VQGAN: what it writes is nonsense by design. The page shows that every stage of the pipeline runs and "
    "connects; it says nothing about the quality of Talk2Face."
)


@dataclass
class Face:
    picture: Path | None  # the face as the tokenizer saw it (cropped, 256x256), if readable
    reconstruction: Path  # the VQGAN's decoding of its 256 codes
    texts: list[str]


@dataclass
class Generated:
    mode: str  # to_image | to_caption | to_attributes
    given: str  # the text, or the attribute asked for
    given_picture: Path | None  # the face given (to_caption, to_attributes)
    pictures: list[Path] = field(default_factory=list)  # generated faces (to_image)
    texts: list[str] = field(default_factory=list)  # generated captions or values


@dataclass
class ReportData:
    stages: list[tuple[str, str, float]]  # (stage, what it did, seconds)
    corpus_chart: Path
    faces: list[Face]
    loss_curve: Path | None
    generated: list[Generated]
    evaluation: str  # the evaluation report as `evaluate` writes it (Markdown: headings, tables, paragraphs)


class _Assets:
    """Copies pictures into report_files/ under stable names and returns their relative paths."""

    def __init__(self, folder: Path):
        self.folder = folder / ASSETS
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self.count = 0

    def add(self, picture: Path | None) -> str | None:
        if picture is None or not Path(picture).is_file():
            return None
        self.count += 1
        name = f"{self.count:03d}-{Path(picture).name}"
        shutil.copyfile(picture, self.folder / name)
        return f"{ASSETS}/{name}"


def write_report(folder: Path, data: ReportData) -> Path:
    folder = Path(folder)
    assets = _Assets(folder)
    parts = [
        _head(),
        "<h1>Talk2Face pipeline demo</h1>",
        f'<p class="warn">{html.escape(NONSENSE)}</p>',
        _stages(data.stages),
        "<h2>Corpus: pairs per dataset</h2>",
        _img(assets.add(data.corpus_chart), "pairs per dataset", 720),
        "<h2>Sample faces, their texts and VQGAN reconstructions</h2>",
        _faces(data.faces, assets),
        "<h2>Training and validation loss</h2>",
        _img(assets.add(data.loss_curve), "loss curves", 720) if data.loss_curve else "<p>No loss curve.</p>",
        "<h2>Generated</h2>",
        _generated(data.generated, assets),
        "<h2>Evaluation on the sample val split</h2>",
        markdown_html(data.evaluation),
        "</body></html>",
    ]
    page = folder / REPORT_FILE
    with atomic_path(page) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return page


def markdown_html(text: str, heading_offset: int = 2) -> str:
    """HTML of a Markdown report (CommonMark with tables, raw HTML escaped), its headings moved down
    `heading_offset` levels to sit under the page's own."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(text)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1:]) + heading_offset, 6)}"
    return parser.renderer.render(tokens, parser.options, {})


def _head() -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Talk2Face demo</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
        ".warn{background:#fff3cd;border:1px solid #e0c36a;padding:.8em}pre{background:#f6f6f6;padding:.8em;"
        "overflow-x:auto}.texts{font-size:.85em;max-width:520px}</style></head><body>"
    )


def _img(src: str | None, alt: str, width: int = 128) -> str:
    if src is None:
        return f"<em>({html.escape(alt)}: not available)</em>"
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" width="{width}">'


def _stages(stages: list[tuple[str, str, float]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s)}</td><td>{html.escape(d)}</td><td>{t:.1f} s</td></tr>" for s, d, t in stages
    )
    return f"<h2>Stages</h2><table><tr><th>stage</th><th>result</th><th>time</th></tr>{rows}</table>"


def _faces(faces: list[Face], assets: _Assets) -> str:
    rows = []
    for face in faces:
        texts = "<br>".join(html.escape(t) for t in face.texts)
        rows.append(
            f"<tr><td>{_img(assets.add(face.picture), 'face')}</td>"
            f"<td>{_img(assets.add(face.reconstruction), 'VQGAN reconstruction')}</td>"
            f"<td class='texts'>{texts}</td></tr>"
        )
    return "<table><tr><th>face</th><th>VQGAN reconstruction</th><th>texts</th></tr>" + "".join(rows) + "</table>"


def _generated(items: list[Generated], assets: _Assets) -> str:
    rows = []
    for g in items:
        given = html.escape(g.given) + (
            f"<br>{_img(assets.add(g.given_picture), 'face given')}" if g.given_picture else ""
        )
        made = " ".join(_img(assets.add(p), "generated face") for p in g.pictures)
        made += "<br>".join(html.escape(t) for t in g.texts)
        rows.append(f"<tr><td>{html.escape(g.mode)}</td><td>{given}</td><td>{made}</td></tr>")
    return "<table><tr><th>mode</th><th>given</th><th>generated</th></tr>" + "".join(rows) + "</table>"
