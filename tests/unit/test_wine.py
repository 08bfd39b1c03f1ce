"""wine is found, or its absence is one clear message; programs run under a pty."""

from __future__ import annotations

import pytest

from builder.config.settings import WINE_ENV
from builder.errors import HostToolError
from builder.host import wine


def test_missing_wine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WINE_ENV, "/nonexistent/wine64")
    with pytest.raises(HostToolError, match="wine is not installed") as caught:
        wine.wine_binary()
    assert "apt-get install" in str(caught.value)
    assert caught.value.exit_code == 13


def test_run_in_pty_sees_a_terminal() -> None:
    code, output = wine.run_in_pty(["sh", "-c", "test -t 1 && echo tty; exit 4"], env={})
    assert code == 4 and output.strip() == "tty"


def test_wine_console_output_is_made_plain() -> None:
    screen = (
        "\x1b[?25lQ\x1b[?25h\x1b[?25lE\x1b[?25h\x1b[?25lM\x1b[?25h\x1b[?25lU\x1b[?25h"
        "\x1b[?25l\x1b[K\x1b[1C\x1b[?25h\x1b[?25lG\x1b[?25hA\x1b[2C1\r\n"
    )
    assert wine.plain_text(screen) == "QEMU GA  1\n"
