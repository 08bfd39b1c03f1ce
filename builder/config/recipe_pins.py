"""A recipe's source pin rewritten in its own text (what `bump --write` does): two values
replaced, every other byte kept (comments, quoting, layout, line ends); written atomically and
loaded again before it replaces the file."""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from builder.config.recipe import load_recipe
from builder.errors import InputError

_KEY_LINE = re.compile(r"(?P<indent> *)(?P<key>[A-Za-z0-9_-]+):(?P<rest>.*)")
_SCALAR = re.compile(
    r"(?P<gap>[ \t]+)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s#\"'|>\[{&*!][^#]*?)"  # quoted, or plain on one line
    r"(?P<tail>[ \t]+#.*|[ \t]*)"
)
_BLOCK_OPEN = re.compile(r"[ \t]*(?:#.*)?")  # `key:` with nothing but a comment after it


def _content(line: str) -> str | None:
    """A line without its end, or None for a blank or comment line (no part of the layout)."""
    text = line.rstrip("\r\n")
    return None if not text.strip() or text.lstrip().startswith("#") else text


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


def _block_end(lines: list[str], start: int) -> int:
    own = _indent(lines[start])
    for index in range(start + 1, len(lines)):
        text = _content(lines[index])
        if text is not None and _indent(text) <= own:
            return index
    return len(lines)


def _find_key(lines: list[str], first: int, end: int, key: str, where: str) -> int:
    """The line of `key` among the block's own keys (those at its first key's indent)."""
    indent = None
    for index in range(first, end):
        text = _content(lines[index])
        if text is None:
            continue
        indent = _indent(text) if indent is None else indent
        match = _KEY_LINE.fullmatch(text)
        if match and _indent(text) == indent and match["key"] == key:
            return index
    raise InputError(
        f"rewrite: no `{key}:` line {where} in block style",
        hint="write the source as a block mapping (one key a line), or edit the pin by hand",
    )


def _replace_value(line: str, value: str, key: str) -> str:
    text = line.rstrip("\r\n")
    match = _KEY_LINE.fullmatch(text)
    scalar = _SCALAR.fullmatch(match["rest"]) if match else None
    if match is None or scalar is None:
        raise InputError(f"rewrite: `{key}:` holds no one-line value to replace; edit it by hand")
    old = scalar["value"]
    quote = old[0] if old[0] in "\"'" else ""
    if not quote and yaml.safe_load(f"k: {value}") != {"k": value}:
        quote = '"'  # e.g. 1:10.0.14: plain, YAML could read it as something else
    return (
        f"{match['indent']}{key}:{scalar['gap']}{quote}{value}{quote}{scalar['tail']}"
        + line[len(text) :]
    )


def rewritten(text: str, kind: str, values: dict[str, str]) -> str:
    """The recipe's text with source.KIND's `values` replaced, each on its own line, and every
    other character (comments, order, quoting, line ends) as it was."""
    lines = text.splitlines(keepends=True)
    source = _find_key(lines, 0, len(lines), "source", "at the top level")
    block = _find_key(lines, source + 1, _block_end(lines, source), kind, "under source:")
    for index in (source, block):
        match = _KEY_LINE.fullmatch(lines[index].rstrip("\r\n"))
        if match is None or not _BLOCK_OPEN.fullmatch(match["rest"]):
            raise InputError(
                f"rewrite: `{match['key'] if match else kind}:` is not a block mapping",
                hint="write the source as a block mapping (one key a line), or edit it by hand",
            )
    end = _block_end(lines, block)
    for key, value in values.items():
        index = _find_key(lines, block + 1, end, key, f"under source.{kind}")
        if _block_end(lines, index) != next(
            (i for i in range(index + 1, len(lines)) if _content(lines[i]) is not None),
            len(lines),
        ):
            raise InputError(f"rewrite: `{key}:` goes on over several lines; edit it by hand")
        lines[index] = _replace_value(lines[index], value, key)
    return "".join(lines)


def renamed(text: str, renames: list[tuple[str, str]]) -> str:
    """Each old version said as the new one (10.2.2 -> 10.2.3; never inside 10.2.20)."""
    for old, new in renames:
        text = re.sub(rf"(?<![0-9A-Za-z.]){re.escape(old)}(?![0-9])", new, text)
    return text


def renamed_in_comments(text: str, renames: list[tuple[str, str]]) -> str:
    """The versions the recipe's comments name, said as the new ones; no value changes."""
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.lstrip().startswith("#"):
            lines[index] = renamed(line, renames)
        elif " #" in line:  # a trailing comment (a value has no " #" in it: YAML ends it there)
            value, comment = line.split(" #", 1)
            lines[index] = value + " #" + renamed(comment, renames)
    return "".join(lines)


def rewrite_recipe(
    path: Path, kind: str, values: dict[str, str], renames: list[tuple[str, str]] | None = None
) -> None:
    """Replace the pin in the file (and the old version its comments name), atomically: a copy
    is written beside it, read back as a recipe (the new values must be what it says), then
    renamed over it."""
    target = path.resolve()
    try:
        text = target.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"rewrite: cannot read {path}: {exc}") from None

    def says_the_pin(written: Path) -> None:
        pinned = getattr(load_recipe(written).source, kind)
        if any(getattr(pinned, key) != value for key, value in values.items()):
            raise InputError(f"rewrite: {path} would not say the new pin; edit it by hand")

    write_checked(
        target, renamed_in_comments(rewritten(text, kind, values), renames or []), says_the_pin
    )


def write_checked(target: Path, text: str, check: Callable[[Path], None]) -> None:
    """Replace target with text, atomically: a copy beside it (its mode), synced, `check`ed,
    renamed over it. On any failure the file is as it was and no copy is left."""
    descriptor, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".bump"
    )
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
        check(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
