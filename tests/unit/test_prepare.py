"""`prepare`: which things a recipe's run takes from the network, in the order the run needs
them (pure planning; the integration suite runs the command itself against the engine)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from builder.cli import main
from builder.commands.common import load_plan
from builder.commands.prepare import items_for
from builder.config.overrides import Overrides
from tests.helpers import RECIPES, WINDOWS_RECIPE, load_default, localize


def names(recipe: Path, every_guest: bool = False) -> list[str]:
    plan, _ = load_plan(recipe, Overrides())
    return [item.name for item in items_for(plan, None, None, every_guest=every_guest)]  # type: ignore[arg-type]


def test_a_linux_recipe_needs_its_images_the_packager_and_the_guest_its_stage_boots() -> None:
    assert names(RECIPES / "linux-static.yaml") == [
        "source linux-static",
        "images linux-static",
        "packager image",
        "systemd guest",
    ]


def test_vm_test_guests_adds_the_guests_of_every_scenario() -> None:
    assert names(RECIPES / "linux-static.yaml", every_guest=True)[-2:] == [
        "systemd guest",
        "sysvinit guest",
    ]


def test_a_windows_recipe_needs_the_wine_image_and_no_guest() -> None:
    assert names(WINDOWS_RECIPE) == ["source windows-msi", "images windows-msi", "wine image"]


def test_a_run_without_a_deb_needs_the_fast_check_vm(tmp_path: Path) -> None:
    data = localize(load_default(), tmp_path)
    data["artifacts"] = [a for a in data["artifacts"] if a["kind"] != "deb"]
    recipe = tmp_path / "no-deb.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    assert names(recipe)[-1] == "fast-check VM"
    assert "systemd guest" not in names(recipe)


def test_a_bad_recipe_stops_prepare_before_anything_is_fetched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")  # never reached
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsource: {}\n")
    code = main(["prepare", str(RECIPES / "linux-static.yaml"), str(bad)])
    err = capsys.readouterr().err
    assert code != 0 and str(bad) in err and "Docker" not in err, err
    assert "Traceback" not in err
