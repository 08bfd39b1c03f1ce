"""The README's examples, as a newcomer types them.

Every `python -m builder ...` / `qga-builder ...` command the README shows (in shell blocks and
inline) must parse with the real command line, and every file it names must exist; those that
need no build and no network run here. `make` targets and `scripts/setup.sh` options it names
exist. The "Your own patch" recipe is written out with a real patch and validated.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
from pathlib import Path

import pytest

from builder.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# Files the README tells the user to make (or that a run makes): not in the checkout.
USER_MADE = {"recipes/my-agent.yaml", "out/qemu-7.2.0"}
# Commands that need no build, no engine and no network: run here.
RUNNABLE = {"validate", "schema", "plan"}
NEEDS_NETWORK = ("--qemu-ref", "--source", "--engine")


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```(?:sh|bash|console)\n(.*?)^```", text, flags=re.S | re.M)


def _commands() -> list[str]:
    """Each command line of the shell blocks (continuations joined, comments cut) and each
    inline `python -m builder ...` / `qga-builder ...` of the prose and tables."""
    found: list[str] = []
    for block in _shell_blocks(README):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                found.append(line)
    found += re.findall(r"`((?:python -m builder|qga-builder) [^`]+)`", README)
    return found


def _builder_argv(command: str) -> list[str] | None:
    words = shlex.split(command)
    for prefix in (["python", "-m", "builder"], ["qga-builder"]):
        if words[: len(prefix)] == prefix:
            return words[len(prefix) :]
    return None


BUILDER_COMMANDS = [c for c in _commands() if _builder_argv(c) is not None]
PLACEHOLDER = re.compile(r"[A-Z]{3,}|\.\.\.|…|<")  # RECIPE, DIR, ..., <version>


def test_the_readme_shows_commands() -> None:
    assert len(BUILDER_COMMANDS) >= 10


@pytest.mark.parametrize("command", BUILDER_COMMANDS)
def test_each_command_parses_and_names_files_that_exist(command: str) -> None:
    argv = _builder_argv(command)
    assert argv is not None
    if any(PLACEHOLDER.search(word) for word in argv):
        # A synopsis with placeholders: the subcommand and every --option must exist.
        parser = build_parser()
        subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        words = [w for w in argv if not w.startswith("-")]
        if not words:
            return
        assert words[0] in subcommands, f"{command}: no subcommand {words[0]!r}"
        sub = subcommands[words[0]]
        known = {o for action in sub._actions for o in action.option_strings}
        for option in (w.split("=")[0] for w in argv if w.startswith("--")):
            assert option in known, f"{command}: {words[0]} has no option {option}"
        return
    if len([w for w in argv if not w.startswith("-")]) <= 2 and len(argv) <= 2:
        # A command named in prose (`python -m builder run`): the (sub)command must exist.
        parser = build_parser()
        subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert argv[0] in subcommands, f"{command}: no subcommand {argv[0]!r}"
        return
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"README command does not parse: {command} (exit {exc.code})")
    for word in argv:
        if re.match(r"^(recipes|scripts|patches|examples)/", word) and word not in USER_MADE:
            assert (ROOT / word).exists(), f"{command}: {word} does not exist"


RUNNABLE_COMMANDS = [
    c
    for c in BUILDER_COMMANDS
    if (argv := _builder_argv(c))
    and argv[0] in RUNNABLE
    and not any(flag in argv for flag in NEEDS_NETWORK)
    and not any(PLACEHOLDER.search(word) for word in argv)
    and not any(word in USER_MADE for word in argv)
]


@pytest.mark.parametrize("command", RUNNABLE_COMMANDS or ["(none)"])
def test_commands_that_need_no_build_succeed(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command != "(none)", "the README shows no command that runs without a build"
    monkeypatch.chdir(ROOT)
    argv = _builder_argv(command)
    assert argv is not None
    assert main(argv) == 0, capsys.readouterr().err


def test_make_targets_and_setup_options_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for command in _commands() + re.findall(
        r"`((?:make|sudo scripts/setup\.sh|scripts/setup\.sh)"
        r"(?: [^`]*)?)`",
        README,
    ):
        words = shlex.split(command.removeprefix("sudo "))
        if words[0] == "make":
            for target in (w for w in words[1:] if not w.startswith("-") and "=" not in w):
                assert target in targets, f"README: make {target}: no such target"
        elif words[0] == "scripts/setup.sh":
            for option in (w for w in words[1:] if w.startswith("--")):
                assert option in setup, f"README: scripts/setup.sh {option}: no such option"


def test_the_own_patch_example_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Played as the README says: the recipe file and one patch of the user's."""
    section = README.split("## Your own patch", 1)[1].split("\n## ", 1)[0]
    recipe_text = re.search(r"```yaml\n(.*?)```", section, flags=re.S)
    assert recipe_text is not None
    project = tmp_path / "checkout"
    (project / "recipes").mkdir(parents=True)
    shutil.copy(ROOT / "Dockerfile.linux", project)
    (project / "pyproject.toml").write_text("")
    patch = project / "patches" / "local" / "0001-my-change.patch"
    patch.parent.mkdir(parents=True)
    patch.write_text("--- a/qga/main.c\n+++ b/qga/main.c\n@@ -1 +1,2 @@\n /*\n+ * mine\n")
    digest = hashlib.sha256(patch.read_bytes()).hexdigest()
    text = recipe_text.group(1).replace("<sha256 of the file>", digest)
    (project / "recipes" / "my-agent.yaml").write_text(text)
    monkeypatch.chdir(project)
    assert main(["validate", "recipes/my-agent.yaml"]) == 0, capsys.readouterr().err
    # and a wrong digest is refused by validate, naming the file
    (project / "recipes" / "my-agent.yaml").write_text(text.replace(digest, "ab" * 32))
    assert main(["validate", "recipes/my-agent.yaml"]) != 0
    assert "0001-my-change.patch" in capsys.readouterr().err


def test_every_test_left_to_the_full_tier_is_named() -> None:
    """A test `make test` leaves out (marked `full`) is named in the README's Tests section."""
    tests = README.split("## Tests", 1)[1].split("\n## ", 1)[0]
    marked = sorted(
        path.name
        for path in (ROOT / "tests" / "integration").glob("test_*.py")
        if re.search(r"mark\.full|series_params\(\)", path.read_text())
    )
    assert marked, "no test is in the full tier"
    for name in marked:
        assert f"`{name}" in tests, f"{name} has tests in the full tier the README does not name"
    assert "make test-all" in tests and "github-actions-nightly.yml" in tests
