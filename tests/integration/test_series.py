"""Every series we carry a patch set for: its pinned Debian source (fetched for real) takes our
patches, as `patches check` tries them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.host.cache import Cache
from builder.stages.source import prepare_source
from tests.helpers import RECIPES, run_cli

SERIES_RECIPES = [*sorted(RECIPES.glob("linux-static-qemu-*.yaml")), RECIPES / "linux-static.yaml"]


@pytest.mark.parametrize("recipe", SERIES_RECIPES, ids=lambda p: p.stem)
def test_the_pinned_source_takes_its_series_patch_set(recipe: Path) -> None:
    plan, _ = load_plan(recipe, Overrides())
    source = prepare_source(plan.source, Cache.default(), lambda line: None)
    result = run_cli("patches", "check", str(source.archive))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(patch["applies"] for patch in report["patches"])
    # The recipe's own patches are that series' set.
    named = {p.path.name for p in plan.patches}
    assert named <= {patch["name"] for patch in report["patches"]}
    assert report["version"].startswith(report["series"])
