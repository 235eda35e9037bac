"""common.progress: plain lines (about every tenth) when the stream is not a terminal; nothing when quiet."""
import io

import pytest

from common.progress import progress


@pytest.mark.parametrize("total, steps, lines", [(100, [1] * 100, 10), (3, [1, 1, 1], 3), (50, [50], 1), (0, [], 0)])
def test_plain_lines_when_not_a_terminal(total, steps, lines):
    stream = io.StringIO()
    with progress(total, "generate", "face", stream=stream) as bar:
        for n in steps:
            bar.update(n)
    out = stream.getvalue().splitlines()
    assert len(out) == lines and "\r" not in stream.getvalue()
    if lines:
        assert out[-1].startswith(f"generate: {total}/{total} faces (")


def test_quiet_prints_nothing():
    stream = io.StringIO()
    with progress(10, "x", stream=stream, quiet=True) as bar:
        bar.update(10)
    assert stream.getvalue() == ""
