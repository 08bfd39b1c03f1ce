"""The recipe's `architecture:`: what an aarch64 build takes (cross packages, --cross-prefix,
the foreign Debian architecture), what it records, what its check demands and how its
packages are named. The orchestrator runs with the fake engine; the integration tests build
for real (tests/integration/test_arm64.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from builder import pipeline
from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.config.recipe import load_recipe, validate_recipe
from builder.errors import ArtifactError, RecipeError
from builder.formats.architecture import AARCH64, X86_64, architecture
from builder.formats.elf import parse_elf
from builder.formats.package_sources import PackageSpec, debian_tree, rpm_sources
from builder.host.cache import Cache
from builder.stages import series
from tests.fakes import QEMU_VERSION, FakeEngine, fake_static_elf
from tests.helpers import ROOT

RECIPES = ROOT / "recipes"


def test_a_cross_build_maps_the_series_packages_to_the_target_machine() -> None:
    native = ["gcc", "libc6-dev", "make", "pkgconf", "libglib2.0-dev", "python3-venv"]
    assert X86_64.build_packages(native) == native
    assert AARCH64.build_packages(native) == [
        "gcc",
        "gcc-aarch64-linux-gnu",
        "libc6-dev",
        "libc6-dev:arm64",
        "make",
        "pkgconf",
        "libglib2.0-dev:arm64",
        "python3-venv",
        "qemu-user",
    ]
    assert AARCH64.build_packages(["libfoo-dev:armhf"]) == ["libfoo-dev:armhf", "qemu-user"]


def test_a_cross_build_names_its_toolchain_unless_the_flags_do() -> None:
    assert X86_64.configure_flags(["--static"]) == ("--static",)
    assert AARCH64.configure_flags(["--static"]) == (
        "--cross-prefix=aarch64-linux-gnu-",
        "--static",
    )
    own = ["--cross-prefix=/opt/x/aarch64-linux-gnu-", "--static"]
    assert AARCH64.configure_flags(own) == tuple(own)
    assert (AARCH64.strip_tool, X86_64.strip_tool) == ("aarch64-linux-gnu-strip", "strip")
    assert (AARCH64.runner, X86_64.runner) == (("qemu-aarch64",), ())
    with pytest.raises(ValueError, match="unknown architecture 'mips'"):
        architecture("mips")


def _recipe_data(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((RECIPES / name).read_text())
    return data


def test_windows_builds_are_x86_64_only() -> None:
    data = _recipe_data("windows-msi.yaml") | {"architecture": "aarch64"}
    with pytest.raises(RecipeError, match="architecture aarch64 needs target: linux"):
        validate_recipe(data, "w.yaml")
    data = _recipe_data("linux-static.yaml") | {"architecture": "arm64"}
    with pytest.raises(RecipeError, match="architecture"):
        validate_recipe(data, "l.yaml")


def test_the_foreign_architecture_build_arg_is_the_tools() -> None:
    data = _recipe_data("linux-static.yaml")
    data["environment"]["build_args"] = {"FOREIGN_ARCHITECTURE": "armhf"}
    with pytest.raises(RecipeError, match="FOREIGN_ARCHITECTURE is set by the tool"):
        validate_recipe(data, "l.yaml")


def _resolved(recipe: Path, version: str = "10.0.13") -> Any:
    plan, _ = load_plan(recipe, Overrides())
    return series.resolve_plan(plan, version)


def test_the_arm64_recipe_resolves_to_a_cross_build_of_the_same_series() -> None:
    arm = _resolved(RECIPES / "linux-static-arm64.yaml")
    x86 = _resolved(RECIPES / "linux-static.yaml")
    assert load_recipe(RECIPES / "linux-static-arm64.yaml").architecture == "aarch64"
    assert (arm.architecture, x86.architecture) == ("aarch64", "x86_64")
    args, x86_args = dict(arm.image.build_args), dict(x86.image.build_args)
    assert args["FOREIGN_ARCHITECTURE"] == "arm64" and "FOREIGN_ARCHITECTURE" not in x86_args
    assert args["PACKAGES"].split() == AARCH64.build_packages(x86_args["PACKAGES"].split())
    assert arm.configure_flags == ("--cross-prefix=aarch64-linux-gnu-", *x86.configure_flags)
    assert arm.patches == x86.patches and arm.image.base == x86.image.base
    assert arm.strip_tool == "aarch64-linux-gnu-strip"
    assert arm.artifacts[0].name == "qemu-ga-patched-10.0.13+qga1-linux-aarch64-static"
    assert arm.cache_key != x86.cache_key
    assert arm.summary()["architecture"] == "aarch64"


def test_every_series_builds_for_arm64_the_same_way() -> None:
    for name in series.supported_series():
        spec = series.load_series(name)
        plan = _resolved(RECIPES / "linux-static-arm64.yaml", f"{name}.0")
        target = spec.targets["linux"]
        assert dict(plan.image.build_args)["PACKAGES"].split() == AARCH64.build_packages(
            target.packages
        )
        assert plan.configure_flags[0] == "--cross-prefix=aarch64-linux-gnu-", name
        assert plan.image.base.suite == target.suite


def test_the_default_machine_leaves_every_cache_key_as_it_was() -> None:
    """`architecture` joins the key only when it is not x86_64: the keys (and the MSI codes
    made from them) of every recipe written before it stay the same."""
    plan, _ = load_plan(RECIPES / "linux-static.yaml", Overrides())
    summary = plan.summary()
    assert summary["architecture"] == "x86_64"
    for recipe in sorted(RECIPES.glob("*.yaml")):
        plan, _ = load_plan(recipe, Overrides())
        data = _recipe_data(recipe.name)
        if "architecture" in data:
            continue
        from dataclasses import replace

        assert plan.inputs_key == replace(plan, architecture="x86_64").inputs_key
        assert plan.inputs_key != replace(plan, architecture="aarch64").inputs_key


def test_static_elf_describes_its_machine() -> None:
    assert parse_elf(fake_static_elf(183)).describe() == "ELF64 static-pie, stripped, AArch64"
    assert parse_elf(fake_static_elf(62)).describe() == "ELF64 static-pie, stripped, x86-64"


def test_packages_are_named_and_marked_for_their_machine() -> None:
    spec = PackageSpec(
        name="qemu-ga-patched",
        version="10.0.13+qga1",
        revision="1",
        maintainer="A B <a@b.example>",
        exec_path="/usr/sbin/qemu-ga-patched-static",
        qemu_version="10.0.13",
        source_date_epoch=1700000000,
        fsfreeze_hook="#!/bin/sh\n",
        architecture=AARCH64,
    )
    assert spec.deb_file == "qemu-ga-patched_10.0.13+qga1-1_arm64.deb"
    assert spec.rpm_file == "qemu-ga-patched-10.0.13+qga1-1.aarch64.rpm"
    assert spec.tarball_stem == "qemu-ga-patched-10.0.13+qga1-linux-aarch64"
    assert "Architecture: arm64\n" in debian_tree(spec)["debian/control"][0]
    spec_file = next(
        text for name, (text, _) in rpm_sources(spec).items() if name.endswith(".spec")
    )
    # rpmbuild --target names the machine (a BuildArch this host cannot run is refused).
    assert "BuildArch" not in spec_file


@pytest.fixture
def arm_setup(tmp_path: Path) -> tuple[Any, str, FakeEngine, Cache]:
    """The orchestrator's fake recipe (a local tree, its own patch-free build) for aarch64."""
    tree = tmp_path / "qemu"
    (tree / "qga").mkdir(parents=True)
    (tree / "configure").write_text("#!/bin/sh\n")
    (tree / "VERSION").write_text(QEMU_VERSION + "\n")
    (tmp_path / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    recipe = {
        "name": "fake-arm64",
        "architecture": "aarch64",
        "environment": {
            "dockerfile": "Dockerfile",
            "base": {"image": "debian:trixie@sha256:" + "a" * 64},
            "packages": ["gcc-aarch64-linux-gnu", "libglib2.0-dev:arm64", "qemu-user"],
        },
        "source": {"local": {"path": str(tree)}},
        "patches": [],
        "configure": {"flags": ["--static"]},
        "build": {"source_date_epoch": 1700000000},
        "artifacts": [{"path": "qga/qemu-ga", "name": "qemu-ga-arm64", "kind": "static-elf"}],
    }
    path = tmp_path / "fake-arm64.yaml"
    path.write_text(yaml.safe_dump(recipe))
    plan, text = load_plan(path, Overrides(output=tmp_path / "out" / "fake-arm64"))
    return plan, text, FakeEngine(), Cache(tmp_path / "cache")


def test_an_aarch64_agent_is_stripped_checked_and_recorded_as_aarch64(arm_setup) -> None:
    plan, text, engine, cache = arm_setup
    engine.agent = fake_static_elf(183)
    result = pipeline.run(plan, engine, cache, text)
    assert result.manifest["architecture"] == "aarch64"
    assert result.manifest["build"]["configure"].startswith("configure --cross-prefix=aarch64-")
    built = next(e for e in engine.events if e[0] == "build")
    assert built[2]["FOREIGN_ARCHITECTURE"] == "arm64"
    commands = dict(engine.commands)
    assert "aarch64-linux-gnu-strip --strip-all" in commands["install"][-1]
    assert commands["version"][0] == "qemu-aarch64"  # never the binary itself
    assert "qemu-aarch64 " in commands["agent-paths"][-1]
    agent = result.manifest["artifacts"][0]
    assert agent["detail"] == "ELF64 static-pie, stripped, AArch64"


def test_an_x86_64_agent_from_an_aarch64_recipe_is_refused(arm_setup) -> None:
    plan, text, engine, cache = arm_setup  # the fake compile makes an x86-64 agent
    with pytest.raises(ArtifactError, match="ELF machine 62, not AArch64"):
        pipeline.run(plan, engine, cache, text)
    assert not plan.output_dir.exists()


def test_a_cross_images_inventory_keeps_both_machines_packages() -> None:
    from builder.stages.toolchain import format_lock, parse_inventory

    lines = [
        "gcc-aarch64-linux-gnu\t4:14.2.0-1\tamd64",
        "libc6\t2.41-12\tamd64",
        "libc6\t2.41-12\tarm64",
        "libglib2.0-dev\t2.84.4-3~deb13u2\tarm64",
    ]
    packages = parse_inventory(lines)
    assert packages == {
        "gcc-aarch64-linux-gnu": "4:14.2.0-1 amd64",
        "libc6": "2.41-12 amd64",
        "libc6:arm64": "2.41-12 arm64",
        "libglib2.0-dev": "2.84.4-3~deb13u2 arm64",
    }
    assert "libc6:arm64 2.41-12 arm64\n" in format_lock(packages)


def test_vm_test_is_refused_for_an_arm64_recipe_until_its_guest_exists() -> None:
    data = _recipe_data("linux-static-arm64.yaml") | {"vm_test": True}
    with pytest.raises(RecipeError, match="vm_test boots x86-64 guests only so far"):
        validate_recipe(data, "a.yaml")


@pytest.mark.parametrize("fast", [[], ["--fast"]])
def test_vm_test_refuses_an_arm64_output_in_words(
    fast: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from builder.cli import main

    out = tmp_path / "linux-static-arm64"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"architecture": "aarch64", "artifacts": []}))
    code = main(["vm-test", str(out), *fast])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "holds an agent for aarch64: vm-test boots x86-64 guests only so far" in err
