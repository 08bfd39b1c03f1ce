"""Every command the README documents exists and answers --help; usage errors exit 2."""

from __future__ import annotations

import re

import pytest

from builder.cli import build_parser, main
from tests.conftest import ROOT

_README = (ROOT / "README.md").read_text()
_COMMANDS = _README.split("## Commands", 1)[1].split("\n## ", 1)[0].split("| option |")[0]
README_COMMANDS = sorted(set(re.findall(r"^\| `([a-z-]+)[ `]", _COMMANDS, re.M)))


def test_readme_lists_commands() -> None:
    assert {"run", "validate", "plan", "schema", "verify", "vm-test", "clean", "lock"} <= set(
        README_COMMANDS
    )


@pytest.mark.parametrize("command", README_COMMANDS)
def test_documented_command_exists(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args([command, "--help"])
    assert caught.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
