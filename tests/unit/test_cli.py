"""Every command the README documents exists and answers --help; usage errors exit 2."""

from __future__ import annotations

import argparse
import inspect
import json
import re
from collections.abc import Iterator
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


# --- help that is true, options where they act, contradictions refused --------------------------


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


COMMANDS = list(_commands(build_parser()))
COMMAND_IDS = [" ".join(path) for path, _ in COMMANDS]


def _option(path: tuple[str, ...], option: str) -> argparse.Action:
    parser = dict(COMMANDS)[path]
    return parser._option_string_actions[option]


@pytest.mark.parametrize("path,parser", COMMANDS, ids=COMMAND_IDS)
def test_every_default_a_help_names_is_the_parsers(path, parser) -> None:
    for action in parser._actions:
        default, words = action.default, action.help or ""
        if default in (None, False, argparse.SUPPRESS) or "default" not in words:
            continue
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        assert shown in words, (path, action.option_strings, words)


def test_verify_help_names_the_directory_verify_writes() -> None:
    from builder.commands.verify import default_directory

    words = _option(("verify",), "--output").help or ""
    assert f"default: {default_directory('<recipe name>')};" in words


def test_base_help_names_the_tag_base_makes() -> None:
    from builder.stages.base_image import debootstrap_inputs, debootstrap_tag

    words = _option(("base", "debootstrap"), "--tag").help or ""
    template = re.search(r"default: (\S+),", words)[1]  # type: ignore[index]
    pattern = re.escape(template).replace("SUITE", "trixie").replace("VARIANT", "minbase")
    made = debootstrap_tag(
        "qga-builder/base:trixie-minbase", debootstrap_inputs("trixie", "minbase", "http://m")
    )
    assert re.fullmatch(pattern.replace("HASH", "[0-9a-f]{12}"), made), (template, made)


def test_vm_test_help_names_the_defaults_the_code_takes() -> None:
    from builder.agent.contract_in_vm import BOOT_DEADLINE
    from builder.host.virtual_machine import AGENT_PORT

    assert f"default {AGENT_PORT}" in (_option(("vm-test",), "--port-name").help or "")
    assert f"default {BOOT_DEADLINE:g}" in (_option(("vm-test",), "--boot-deadline").help or "")


RECIPE_COMMANDS = {("run",), ("verify",), ("validate",), ("plan",), ("lock",), ("prepare",)}


@pytest.mark.parametrize("path,parser", COMMANDS, ids=COMMAND_IDS)
def test_allow_outside_project_is_offered_only_where_it_acts(path, parser) -> None:
    """Only commands that read recipes take it (it lets a recipe reach outside its project)."""
    offered = "--allow-outside-project" in parser._option_string_actions
    assert offered == (path in RECIPE_COMMANDS), path
    if offered:
        handler = inspect.getsource(parser.get_default("handler"))  # the lazy import's target
        module = {"validate": "inspect", "plan": "inspect"}.get(path[0], path[0])
        source = (ROOT / "builder" / "commands" / f"{module}.py").read_text()
        assert "args.allow_outside_project" in source and "import_module" in handler


def test_an_option_a_command_does_not_take_is_refused_naming_it(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["clean", "--allow-outside-project"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "no option --allow-outside-project here; this command takes: --dry-run" in err


def test_a_misspelt_command_says_which_was_meant(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["valdate", "recipes/linux-static.yaml"])
    assert caught.value.code == 2
    assert "invalid choice: 'valdate'; did you mean 'validate'?" in capsys.readouterr().err


def test_a_misspelt_option_says_which_was_meant(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["run", str(DEFAULT_RECIPE), "--no-cahce"])
    assert caught.value.code == 2
    assert "no option --no-cahce; did you mean --no-cache?" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,words",
    [
        (["clean", "--keep", "-1"], "argument --keep: must be 0 or more, not -1"),
        (["run", "r.yaml", "--jobs", "0"], "argument --jobs: must be 1 or more, not 0"),
        (["vm-test", "d", "--fast", "--boot-deadline", "0"], "must be more than 0 seconds"),
    ],
)
def test_numbers_out_of_range_are_refused(argv: list[str], words: str, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert words in capsys.readouterr().err


def test_two_engines_for_one_recipe_are_refused(capsys) -> None:
    """One build runs on one engine: the second would be silently ignored."""
    code = main(["run", str(DEFAULT_RECIPE), "--engine", "unix:///a", "--engine", "unix:///b"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--engine is given 2 times for one recipe" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--agent", "x"], "--agent: only with --fast"),
        (["--port-name", "p", "--boot-deadline", "5"], "--port-name, --boot-deadline: only"),
        (["--fast", "--scenarios", "systemd"], "--scenarios chooses the package scenarios"),
    ],
)
def test_vm_test_refuses_the_other_modes_options(
    tmp_path: Path, argv: list[str], words: str, capsys
) -> None:
    assert main(["vm-test", str(tmp_path), *argv]) == 2
    assert words in capsys.readouterr().err


def test_verify_of_a_directory_refuses_build_options(tmp_path: Path, capsys) -> None:
    (tmp_path / "SHA256SUMS").write_text("")
    assert main(["verify", str(tmp_path), "--locked", "--qemu-ref", "v10.0.2"]) == 2
    assert "--qemu-ref, --locked: only with a RECIPE to build" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == 0  # an empty release checks clean


@pytest.mark.parametrize(
    ("argv", "log_format", "verbose"),
    [
        (["validate", "R"], "console", 0),
        (["--log-format", "json", "-v", "validate", "R"], "json", 1),
        (["validate", "R", "-v", "--log-format", "json"], "json", 1),
        (["-v", "validate", "-v", "R"], "console", 2),  # repeated -v adds up
        (["-vv", "validate", "R"], "console", 2),
        (["--log-format", "json", "validate", "--log-format", "console", "R"], "console", 0),
        (["--log-format", "console", "validate", "R", "--log-format=json"], "json", 0),
        (["-v", "--log-format", "json", "base", "debootstrap", "--suite", "trixie"], "json", 1),
        (["base", "-v", "--log-format", "json", "debootstrap", "--suite", "trixie"], "json", 1),
        (["base", "--log-format", "json", "debootstrap", "--log-format", "console",
          "--suite", "trixie", "-v"], "console", 1),
        (["patches", "-v", "check", "-v", "S"], "console", 2),
    ],
)  # fmt: skip
def test_global_options_anywhere(argv: list[str], log_format: str, verbose: int) -> None:
    """Before the command, after it, after a sub-command: the one after the command wins when
    given twice, and every -v counts."""
    parser = build_parser()
    for _ in range(2):  # a parser parses twice the same way
        args = parser.parse_args(argv)
        assert (args.log_format, args.verbose) == (log_format, verbose)


def test_every_command_takes_the_global_options() -> None:
    """Defined once, offered by every parser level."""

    def levels(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from levels(child)

    for parser in levels(build_parser()):
        assert {"--log-format", "-v", "--verbose"} <= set(parser._option_string_actions), (
            parser.prog
        )


def test_global_options_before_the_command_take_effect(capsys) -> None:
    assert main(["--log-format", "json", "validate", str(DEFAULT_RECIPE)]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert json.loads(line)["event"] == "valid"
