"""The README's dataset section, generated from the manifests so that it cannot drift from them.

python3 cli.py datasets --markdown      # print it
python3 scripts/update_readme.py        # rewrite the block between the markers in README.md
"""

from __future__ import annotations

from collections.abc import Iterable

from . import load

BEGIN = "<!-- datasets: generated from manifests/ by scripts/update_readme.py; do not edit -->"
END = "<!-- datasets: end -->"


def datasets_markdown(names: Iterable[str]) -> str:
    names = list(names)
    lines = ["| dataset | access | licence | official records | paper (Table 1) |", "|---|---|---|---:|---:|"]
    for name in names:
        m = load(name)
        lines.append(
            f"| [{m['title']}]({m['homepage']}) `{name}` | {m['access']} | {_one_line(m['licence'])} | "
            f"{_official(m['counts'])} | {m['counts']['paper']:,} |"
        )
    for name in names:
        lines += ["", *_dataset_section(load(name))]
    return "\n".join(lines)


def _dataset_section(m: dict) -> list[str]:
    name = m["name"]
    return [
        f"#### {m['title']} (`{name}`)",
        f"Get it from {m['homepage']} ({m['access']}). Licence: {_one_line(m['licence'])}.",
        "",
        "Expected under `--root`:",
        "",
        *[f"- `{f['path']}` — {_one_line(f['what'])}" for f in m["files"]],
        "",
        f"    python3 cli.py convert {name} --root ~/data/{name} --out converted/",
        "",
        f"Counts: official {_official(m['counts'])} ({_splits(m['counts']['official'])}); the paper used "
        f"{m['counts']['paper']:,}." + (f" {_one_line(m['counts_note'])}" if m.get("counts_note") else ""),
    ]


def _official(counts: dict) -> str:
    return f"{counts['official']['total']:,}"


def _splits(official: dict) -> str:
    parts = [f"{split} {n:,}" for split, n in official.items() if split != "total"]
    return ", ".join(parts) if parts else "no official split"


def _one_line(text) -> str:
    return " ".join(str(text).split()).replace("|", "/")


def replace_block(readme: str, block: str) -> str:
    """README text with the generated block between BEGIN and END replaced by `block`."""
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"
