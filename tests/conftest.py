"""Shared fixtures: paths of the project's own recipes and a way to write variants of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
DEFAULT_RECIPE = RECIPES / "linux-static.yaml"


def load_default() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_RECIPE.read_text())


def absolutize(data: dict[str, Any], base: Path = RECIPES) -> dict[str, Any]:
    """Make the recipe's relative paths absolute, so a copy works from any directory."""
    env = data["environment"]
    env["dockerfile"] = str((base / env["dockerfile"]).resolve())
    for patch in data.get("patches", []):
        patch["path"] = str((base / patch["path"]).resolve())
    return data


@pytest.fixture
def write_recipe(tmp_path: Path):
    """write_recipe(data or text, name) -> path of a recipe file in tmp_path."""

    def write(content: dict[str, Any] | str | bytes, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(yaml.safe_dump(content, sort_keys=False))
        return path

    return write
