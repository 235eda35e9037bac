"""The demo's report: the evaluation as HTML tables (not Markdown in a <pre>), the corpus chart on a log axis."""

import html.parser
from pathlib import Path

from PIL import Image

from pipeline_demo.report import Face, ReportData, markdown_html, write_report

EVALUATION = """# Evaluation of run/checkpoints/step-0000004 on 16 val faces

## The paper's tasks

| table | task | metric | ours | paper |
|---|---|---|---|---|
| Table 4 | AffectNet expression | accuracy (%) | 0.00 | 44.7 |
| Table 4 | FairFace race | accuracy (%) | 0.00 | n/a |

Paper: Li et al., <script>alert(1)</script> ACM MM 2022

## Loss per task (mean cross-entropy per target token)

| task | tokens | loss |
|---|---|---|
| caption_to_face | 256 | 8.4067 |
"""


class Tables(html.parser.HTMLParser):
    """The rows of every <table> (cell texts), the tags seen."""

    def __init__(self):
        super().__init__()
        self.tables, self.tags, self.cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def parsed(page: str) -> Tables:
    tables = Tables()
    tables.feed(page)
    return tables


def test_markdown_tables_become_html_tables_under_the_pages_headings():
    tables = parsed(markdown_html(EVALUATION))
    assert tables.tables[0][0] == ["table", "task", "metric", "ours", "paper"]
    assert tables.tables[0][1] == ["Table 4", "AffectNet expression", "accuracy (%)", "0.00", "44.7"]
    assert tables.tables[1][1] == ["caption_to_face", "256", "8.4067"]
    assert "h1" not in tables.tags and "h2" not in tables.tags and tables.tags.count("h4") == 2
    assert "script" not in tables.tags and "pre" not in tables.tags  # raw HTML in the report is escaped


def test_report_shows_the_evaluation_as_tables(tmp_path):
    chart = tmp_path / "pairs_per_dataset.png"
    Image.new("RGB", (8, 8)).save(chart)
    data = ReportData(
        [("evaluate", "16 val faces evaluated", 1.0)], chart, [Face(None, chart, ["a text"])], None, [], EVALUATION
    )
    page = write_report(tmp_path / "report", data).read_text(encoding="utf-8")
    evaluation = page[page.index("Evaluation on the sample val split") :]
    assert "<pre>" not in page and "| table |" not in evaluation
    assert [row[:2] for row in parsed(evaluation).tables[0][1:]] == [
        ["Table 4", "AffectNet expression"],
        ["Table 4", "FairFace race"],
    ]
    assert Path(tmp_path / "report" / "report_files" / "001-pairs_per_dataset.png").is_file()
