"""Property-based: malformed recipes never produce a traceback, a hang or unbounded memory;
each gets a RecipeError that names the file (and the field, when the YAML itself parsed)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.config.recipe import Recipe, load_recipe
from builder.errors import RecipeError
from tests.helpers import absolutize, load_default

BASE = absolutize(load_default())
FUZZ = settings(
    max_examples=60,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=50)
    | st.text(min_size=5000, max_size=6000),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


ALL_PATHS = _paths(BASE)


def _set(data: Any, path: tuple, value: Any, delete: bool = False) -> None:
    for key in path[:-1]:
        data = data[key]
    if delete:
        del data[path[-1]]
    else:
        data[path[-1]] = value


def _check(path: Path) -> None:
    try:
        load_recipe(path)
    except RecipeError as exc:
        message = str(exc)
        assert str(path) in message
        assert "Traceback" not in message
        # Validation errors name the field: "FILE: field.path: message" (or the top level).
        whole_file = ("YAML error", "UTF-8", "mapping", "larger than", "nests too deeply")
        if not any(reason in message for reason in whole_file):
            assert re.search(re.escape(str(path)) + r": \S[^\n]*: ", message), message
        assert all(
            line.startswith(str(path)) or line.startswith("  hint") or line.startswith("...")
            for line in message.splitlines()
        ), message


@FUZZ
@given(path=st.sampled_from(ALL_PATHS), value=junk)
def test_wrong_values_anywhere(tmp_path: Path, path: tuple, value: Any) -> None:
    data = copy.deepcopy(BASE)
    _set(data, path, value)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    _check(recipe)


@FUZZ
@given(path=st.sampled_from([p for p in ALL_PATHS if isinstance(p[-1], str)]))
def test_missing_fields(tmp_path: Path, path: tuple) -> None:
    data = copy.deepcopy(BASE)
    _set(data, path, None, delete=True)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    _check(recipe)


@FUZZ
@given(
    parent=st.sampled_from([()] + [p for p in ALL_PATHS if isinstance(p[-1], str)]),
    key=st.text(min_size=1, max_size=20).filter(lambda k: k not in Recipe.model_fields),
    value=junk,
)
def test_unknown_keys(tmp_path: Path, parent: tuple, key: str, value: Any) -> None:
    data = copy.deepcopy(BASE)
    target = data
    for part in parent:
        target = target[part]
    if not isinstance(target, dict) or key in target:
        return
    target[key] = value
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    try:
        load_recipe(recipe)
    except RecipeError as exc:
        assert str(recipe) in str(exc)
    else:
        raise AssertionError(f"unknown key {key!r} at {parent} was accepted")


@FUZZ
@given(raw=st.binary(max_size=2000))
def test_arbitrary_bytes(tmp_path: Path, raw: bytes) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(raw)
    _check(recipe)


@FUZZ
@given(text=st.text(max_size=500))
def test_arbitrary_text(tmp_path: Path, text: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(text.encode("utf-8", errors="replace"))
    _check(recipe)


@settings(
    max_examples=30, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(depth=st.integers(min_value=10, max_value=100_000), kind=st.sampled_from("[{"))
def test_deep_nesting(tmp_path: Path, depth: int, kind: str) -> None:
    close = "]" if kind == "[" else "}"
    opener = "[" if kind == "[" else "{a: "
    recipe = tmp_path / "r.yaml"
    text = "name: " + opener * depth + "1" + close * depth + "\n"
    recipe.write_text(text[:300_000])
    _check(recipe)


@settings(
    max_examples=30, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(levels=st.integers(min_value=1, max_value=40), width=st.integers(min_value=2, max_value=10))
def test_alias_bombs(tmp_path: Path, levels: int, width: int) -> None:
    lines = ["a0: &a0 [lol]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append(f"name: *a{levels - 1}")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("\n".join(lines) + "\n")
    _check(recipe)
