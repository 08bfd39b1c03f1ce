"""Shared fixtures, the `integration` marker for everything under tests/integration/, and the
order: tests marked `disruptive` (they restart the Docker engine) run after all others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


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
