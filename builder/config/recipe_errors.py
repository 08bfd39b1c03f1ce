"""pydantic's validation errors said for people: one line per error, naming the file and the
field (or the command-line flag that set it), in words rather than regular expressions."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from builder.config.patterns import in_words
from builder.config.suggest import close_match

MAX_LINES = 20


def field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", str(item)):
            parts.append(f"[{str(item)[:64]!r}]")  # odd keys quoted: the message stays one line
        elif not parts:
            parts.append(str(item))
        else:
            parts.append(f".{item}")
    return "".join(parts) or "(top level)"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds (through Optional, list, Annotated), if any."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names a mapping at `loc` may have (list indexes are looked through)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return []
        model = _model_in(model.model_fields[part].annotation)
    return list(model.model_fields) if model is not None else []


def _unknown_field(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    known = fields_at(root, loc[:-1])
    guess = close_match(str(loc[-1]), known)
    if guess is not None:
        return f"unknown field; did you mean {guess!r}?"
    listed = f" (here: {', '.join(known)})" if known else ""
    return f"unknown field{listed}; `qga-builder schema` lists every field"


def _message(root: type[BaseModel], loc: tuple[Any, ...], err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return _unknown_field(root, loc)
    if err["type"] == "string_pattern_mismatch":
        worded = in_words(str(err.get("ctx", {}).get("pattern", "")), err.get("input"))
        if worded is not None:
            return worded
    msg = str(err["msg"])
    if err["type"] == "literal_error":  # `target: linx`, `kind: statc-elf`
        choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        guess = close_match(str(err.get("input")), choices)
        if guess is not None:
            return f"{err.get('input')!r}: {msg}; did you mean {guess!r}?"
    return msg.removeprefix("Value error, ")


def blamed_flag(path: str, blame: Mapping[str, str]) -> str | None:
    """The command-line flag that set the field at `path` (blame: field prefix -> flag)."""
    for prefix, flag in blame.items():
        if path == prefix or path.startswith((f"{prefix}.", f"{prefix}[")):
            return flag
    return None


def error_lines(
    origin: str,
    exc: ValidationError,
    root: type[BaseModel],
    blame: Mapping[str, str] | None = None,
) -> list[tuple[str | None, str]]:
    """(flag or None, line) per error: a field an override set is blamed on its flag."""
    lines = []
    for err in exc.errors(include_url=False):
        # Drop pydantic's internal tags for function validators from the location.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = field_path(loc)
        flag = blamed_flag(path, blame or {})
        where = flag if flag is not None else f"{origin}: {path}"
        lines.append((flag, f"{where}: {_message(root, loc, err)}"))
    return lines


def join_lines(lines: list[str]) -> str:
    more = f"\n... and {len(lines) - MAX_LINES} more" if len(lines) > MAX_LINES else ""
    return "\n".join(lines[:MAX_LINES]) + more
