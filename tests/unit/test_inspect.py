"""`validate` and `plan`: no quiet wrong answers. A wrong pin is refused before `run`, `plan`
prints one JSON document, and its cache key is the one the run will record (or none, said)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from builder.cli import main
from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.stages import series
from tests.helpers import DEFAULT_RECIPE, EXPLICIT_RECIPE, RECIPES, write_variant


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of the test's own: what `plan` knows must not come from this host's runs."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("QGA_BUILDER_CACHE", str(cache))
    return cache


def _edit(path: Path, change) -> Path:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_validate_refuses_a_patch_whose_digest_differs(tmp_path: Path, capsys) -> None:
    path = write_variant(tmp_path / "r", "wrong-pin", explicit=True)
    _edit(path, lambda data: data["patches"][0].update(sha256="0" * 64))
    assert main(["validate", str(path)]) == 3
    err = capsys.readouterr().err
    patch = yaml.safe_load(path.read_text())["patches"][0]["path"]
    assert f"{path}: patches[0].sha256: sha256 mismatch for " in err
    assert patch in err and "Traceback" not in err


def test_validate_refuses_a_local_tarball_whose_digest_differs(tmp_path: Path, capsys) -> None:
    path = write_variant(tmp_path / "r", "wrong-tarball")
    (tmp_path / "r" / "qemu.tar.xz").write_bytes(b"not the pinned bytes")
    tarball = {"tarball": {"path": "qemu.tar.xz", "sha256": "1" * 64}}
    _edit(path, lambda data: data.update(source=tarball))
    assert main(["validate", str(path)]) == 3
    assert f"{path}: source.tarball.sha256: sha256 mismatch for " in capsys.readouterr().err


def test_validate_accepts_right_pins(tmp_path: Path) -> None:
    path = write_variant(tmp_path / "r", "right-pins", explicit=True)
    assert main(["validate", str(path)]) == 0


def test_plan_of_several_recipes_is_one_json_document(capsys) -> None:
    assert main(["plan", "--json", str(DEFAULT_RECIPE), str(EXPLICIT_RECIPE)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [plan["recipe_name"] for plan in printed] == ["linux-static", "linux-static-qemu-10.0"]
    assert main(["plan", "--json", str(DEFAULT_RECIPE)]) == 0
    assert json.loads(capsys.readouterr().out)["recipe_name"] == "linux-static"  # one: an object


def test_plan_prints_nothing_when_one_recipe_fails(tmp_path: Path, capsys) -> None:
    assert main(["plan", "--json", str(DEFAULT_RECIPE), str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().out == ""  # never half a document
    assert main(["plan", str(DEFAULT_RECIPE), str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().out == ""


def _pinned_by_debian(recipe: Path) -> bool:
    return yaml.safe_load(recipe.read_text())["source"].keys() in ({"debian"}, {"mirror"})


# A recipe whose source is a download or a git ref is fetched by `plan` as by `run`; upstream's
# hosts are not reachable from the test machines (the failure is tested below). A Debian pin,
# by apt or by its path under the mirror, names its release: `plan` fetches nothing.
DEBIAN_RECIPES = [r for r in sorted(RECIPES.glob("*.yaml")) if _pinned_by_debian(r)]


def test_most_recipes_pin_a_debian_source() -> None:
    assert len(DEBIAN_RECIPES) >= len(list(RECIPES.glob("*.yaml"))) - 2


@pytest.mark.parametrize("recipe", DEBIAN_RECIPES, ids=lambda p: p.stem)
def test_plan_shows_every_recipe_resolved(
    recipe: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No placeholder: the series' patches, base suite and flags, the version, the key. A
    Debian pin names its release, so nothing is fetched here."""

    def no_fetch(*args: object, **kwargs: object) -> None:
        raise AssertionError("plan fetched a source")

    monkeypatch.setattr("builder.stages.source.prepare_source", no_fetch)
    assert main(["plan", "--json", str(recipe)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["patches"] and all(p["sha256"] for p in printed["patches"])
    assert printed["image"]["base"]["suite"] or "@sha256:" in printed["image"]["base"]["reference"]
    assert "(" not in printed["image"]["base"]["reference"]  # "(the suite of ...)"
    assert printed["configure_flags"]
    assert re.fullmatch(r"[0-9a-f]{64}", printed["cache_key"])
    assert printed["qemu_version"].startswith(printed["resolution"]["series"]["series"] + ".")
    assert main(["plan", str(recipe)]) == 0  # and for people
    text = capsys.readouterr().out
    assert printed["cache_key"] in text and "patches     " in text


def test_plan_fails_clearly_when_the_source_cannot_be_fetched(tmp_path: Path, capsys) -> None:
    """A tarball URL the run would download: `plan` fetches it as the run would; when that
    fails, one error naming the source, no document, no placeholder."""
    path = write_variant(tmp_path / "r", "unreachable")
    url = {"tarball": {"url": "http://127.0.0.1:9/qemu-10.0.13.tar.xz", "sha256": "1" * 64}}
    _edit(path, lambda data: data.update(source=url))
    code = main(["plan", "--json", str(path)])
    captured = capsys.readouterr()
    assert code != 0 and captured.out == ""
    assert "127.0.0.1:9" in captured.err and "Traceback" not in captured.err


def test_plan_takes_the_version_a_run_already_read(own_cache: Path, capsys) -> None:
    """A source an earlier run checked is known by its digest: `plan` prints the key."""
    plan, _ = load_plan(DEFAULT_RECIPE, Overrides())
    assert plan.source.sha256 is not None
    (own_cache / "checked").mkdir(parents=True)
    marker = {"members": 3, "top_dir": "qemu-10.0.13", "newest_mtime": 1, "version": "10.0.13"}
    (own_cache / "checked" / f"v3-{plan.source.sha256}.json").write_text(json.dumps(marker))
    assert main(["plan", "--json", str(DEFAULT_RECIPE)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cache_key"] == series.choose(plan, "10.0.13").run_key
    assert printed["cache_key"] != plan.cache_key  # the series' choices are in the key
    assert printed["qemu_version"] == "10.0.13"


def test_plan_reads_a_local_trees_version(tmp_path: Path, capsys) -> None:
    tree = tmp_path / "qemu"
    (tree / "qga").mkdir(parents=True)
    (tree / "VERSION").write_text("10.0.13\n")
    assert main(["plan", "--json", str(DEFAULT_RECIPE), "--source", str(tree)]) == 0
    printed = json.loads(capsys.readouterr().out)
    plan, _ = load_plan(DEFAULT_RECIPE, Overrides(source=tree))
    assert printed["cache_key"] == series.choose(plan, "10.0.13").run_key


def test_the_run_key_of_a_recipe_naming_its_patches_is_its_plan_key() -> None:
    """Unchanged for recipes that name their patches (the MSI's codes come from this key)."""
    plan, _ = load_plan(EXPLICIT_RECIPE, Overrides())
    assert series.choose(plan, "10.0.13").run_key == plan.cache_key
    assert series.resolve_plan(plan, "10.0.13").cache_key == plan.cache_key
    digest = hashlib.sha256(plan.patches[0].path.read_bytes()).hexdigest()
    assert digest == plan.patches[0].sha256
