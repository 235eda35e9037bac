from pathlib import Path

from converters import DATASETS
from manifests.readme import BEGIN, END, datasets_markdown, replace_block

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_dataset_section_is_generated_from_the_manifests():
    text = README.read_text(encoding="utf-8")
    assert replace_block(text, datasets_markdown(DATASETS)) == text, "run python3 scripts/update_readme.py"


def test_every_dataset_has_its_section_and_counts():
    block = datasets_markdown(DATASETS)
    for name in DATASETS:
        assert f"(`{name}`)" in block and f"python3 cli.py convert {name} --root" in block
    assert "| 202,599 | 203,000 |" in block  # CelebA: official and paper counts
    assert BEGIN not in block and END not in block
