"""Progress off a terminal: plain lines (no `\\r` redraws), throttled, the last one always shown; nothing when
disabled (quiet) or when there is nothing to count."""

import pytest

from common.progress import Progress


def test_plain_lines_when_stderr_is_not_a_terminal(capsys):
    with Progress(4, "build-corpus", "stage", every=3600) as progress:
        for stage in ("read", "clean", "splits", "images"):
            progress.update(1, stage)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == ["build-corpus: 1/4 stages (read)", "build-corpus: 4/4 stages (images)"]


def test_every_update_is_a_line_when_not_throttled_and_nothing_when_disabled(capsys):
    with Progress(3, "preview", "face", every=0) as progress:
        progress.update(2)
        progress.update(1)
    assert capsys.readouterr().err.splitlines() == ["preview: 2/3 faces", "preview: 3/3 faces"]
    with Progress(3, "preview", "face", enabled=False) as progress:
        progress.update(3)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("total, steps, lines", [(100, [1] * 100, 2), (3, [1, 1, 1], 2), (50, [50], 1), (0, [], 0)])
def test_throttled_lines_end_with_the_total_and_stdout_stays_clean(capsys, total, steps, lines):
    with Progress(total, "generate", "face", every=3600) as progress:
        for n in steps:
            progress.update(n)
    captured = capsys.readouterr()
    out = captured.err.splitlines()
    assert captured.out == "" and len(out) == lines and "\r" not in captured.err
    if lines:
        assert out[-1] == f"generate: {total}/{total} faces"
