"""What reaches the user's terminal from a container is neutralised and bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder import log
from builder.engine.container import MAX_LINE_BYTES, _cut
from builder.log import StepOutput, neutralize


@pytest.mark.parametrize(
    "hostile",
    [
        "\x1b]0;owned title\x07",  # set the terminal's title
        "\x1b[2J\x1b[H",  # clear the screen
        "\x1bP+q544e\x1b\\",  # a device control string (terminal queries)
        "\x9b31m",  # an 8-bit CSI
        "line\rOVERWRITTEN",  # a carriage return hiding what came before
    ],
)
def test_control_sequences_never_reach_the_terminal(
    hostile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log.configure("console")
    with (tmp_path / "step.log").open("w") as handle:
        StepOutput("compile", handle, tmp_path / "step.log").line(f"before {hostile} after")
    shown = capsys.readouterr().err
    assert not any((ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "before" in shown and "after" in shown
    assert hostile in (tmp_path / "step.log").read_bytes().decode()  # the log keeps the bytes


def test_tabs_stay_and_visible_text_is_untouched() -> None:
    assert neutralize("a\tb ü €") == "a\tb ü €"
    assert neutralize("\x1b[31m") == "\\x1b[31m"


def test_long_lines_are_cut() -> None:
    line = b"x" * (MAX_LINE_BYTES * 3)
    cut = _cut(line)
    assert len(cut) < MAX_LINE_BYTES + 64 and cut.endswith(b"bytes cut]")
    assert _cut(b"short") == b"short"
