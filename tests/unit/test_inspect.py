"""`validate` and `plan`: no quiet wrong answers. A wrong pin is refused before `run`, `plan`
prints one JSON document, and its cache key is the one the run will record (or none, said)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from builder.cli import main
from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.stages import series
from tests.helpers import DEFAULT_RECIPE, EXPLICIT_RECIPE, write_variant


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
    assert main(["plan", str(DEFAULT_RECIPE), str(EXPLICIT_RECIPE)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [plan["recipe_name"] for plan in printed] == ["linux-static", "linux-static-qemu-10.0"]
    assert main(["plan", str(DEFAULT_RECIPE)]) == 0
    assert json.loads(capsys.readouterr().out)["recipe_name"] == "linux-static"  # one: an object


def test_plan_prints_nothing_when_one_recipe_fails(tmp_path: Path, capsys) -> None:
    assert main(["plan", str(DEFAULT_RECIPE), str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().out == ""  # never half a document


def test_plan_says_why_it_has_no_key_before_the_source_is_here(capsys) -> None:
    """The default recipe leaves its patches to the source's series: without the source, the
    key the run will record is not known, and `plan` says so instead of printing another."""
    assert main(["plan", str(DEFAULT_RECIPE)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cache_key"] is None
    assert "QEMU version" in printed["cache_key_note"]


def test_plan_takes_the_version_a_run_already_read(own_cache: Path, capsys) -> None:
    """A source an earlier run checked is known by its digest: `plan` prints the key."""
    plan, _ = load_plan(DEFAULT_RECIPE, Overrides())
    assert plan.source.sha256 is not None
    (own_cache / "checked").mkdir(parents=True)
    marker = {"members": 3, "top_dir": "qemu-10.0.13", "newest_mtime": 1, "version": "10.0.13"}
    (own_cache / "checked" / f"v3-{plan.source.sha256}.json").write_text(json.dumps(marker))
    assert main(["plan", str(DEFAULT_RECIPE)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cache_key"] == series.choose(plan, "10.0.13").run_key
    assert printed["cache_key"] != plan.cache_key  # the series' choices are in the key
    assert printed["qemu_version"] == "10.0.13"


def test_plan_reads_a_local_trees_version(tmp_path: Path, capsys) -> None:
    tree = tmp_path / "qemu"
    (tree / "qga").mkdir(parents=True)
    (tree / "VERSION").write_text("10.0.13\n")
    assert main(["plan", str(DEFAULT_RECIPE), "--source", str(tree)]) == 0
    printed = json.loads(capsys.readouterr().out)
    plan, _ = load_plan(DEFAULT_RECIPE, Overrides(source=tree))
    assert printed["cache_key"] == series.choose(plan, "10.0.13").run_key


def test_the_run_key_of_a_recipe_naming_its_patches_is_its_plan_key() -> None:
    """Unchanged for recipes that name their patches (the MSI's codes come from this key)."""
    plan, _ = load_plan(EXPLICIT_RECIPE, Overrides())
    assert series.choose(plan, "10.0.13").run_key == plan.cache_key
    assert series.planned_key(plan, None) == plan.cache_key
    digest = hashlib.sha256(plan.patches[0].path.read_bytes()).hexdigest()
    assert digest == plan.patches[0].sha256
