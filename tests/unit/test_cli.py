"""Every command the README documents exists and answers --help; usage errors exit 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builder.cli import build_parser, main
from tests.helpers import DEFAULT_RECIPE, ROOT

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


@pytest.mark.parametrize("command", ["run", "verify"])
def test_output_into_a_users_directory_is_refused_before_any_work(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--output ~/Documents` must not delete Documents (no Docker needed: refused first)."""
    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "letter.txt").write_text("keep me")
    code = main([command, str(DEFAULT_RECIPE), "--output", str(documents)])
    assert code == 9
    err = capsys.readouterr().err
    assert str(documents) in err and "refusing" in err and "Traceback" not in err
    assert [p.name for p in documents.iterdir()] == ["letter.txt"]
    assert (documents / "letter.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Documents"]


def test_verify_refuses_a_link_as_its_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = tmp_path / "users"
    users.mkdir()
    link = tmp_path / "verify-out"
    link.symlink_to(users)
    assert main(["verify", str(DEFAULT_RECIPE), "--output", str(link)]) == 9
    assert "symbolic link" in capsys.readouterr().err
    assert list(users.iterdir()) == []


def test_readme_documents_every_host_setting() -> None:
    from builder.config.settings import DOCUMENTED

    section = _README.split("## Host settings", 1)[1].split("\n## ", 1)[0]
    for variable in DOCUMENTED:
        assert f"| `{variable}` |" in section, variable


def test_every_error_has_an_exit_code_and_a_hint() -> None:
    import builder.errors as errors

    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.BuilderError)
    ]
    codes = [c.exit_code for c in classes if c not in (errors.BuilderError, errors.UsageError)]
    assert len(codes) == len(set(codes))  # one code per kind (usage shares the recipe's 2)
    paragraph = _README.split("Exit codes:", 1)[1].split("\n\n", 1)[0]
    for cls in classes:
        assert cls("x").hint, cls
        assert re.search(rf"\b{cls.exit_code}\b", paragraph) or cls.exit_code == 1, cls


def test_vm_test_boots_the_agent_the_manifest_names(tmp_path: Path) -> None:
    """Release recipes put the version in the agent's name: `vm-test DIR` finds it by kind."""
    from builder.commands.vm_test import agent_in

    assert agent_in(tmp_path, None) == tmp_path / "qemu-ga-patched-static"  # no manifest
    name = "qemu-ga-patched-7.2.0+qga1-linux-x86_64-static"
    artifacts = [{"name": "x.deb", "kind": "deb"}, {"name": name, "kind": "static-elf"}]
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": artifacts}))
    assert agent_in(tmp_path, None) == tmp_path / name
    assert agent_in(tmp_path, "mine") == tmp_path / "mine"  # --agent wins
    escape = [{"name": "../x", "kind": "static-elf"}]  # a name from a file: never a path
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": escape}))
    assert agent_in(tmp_path, None) == tmp_path / "qemu-ga-patched-static"
