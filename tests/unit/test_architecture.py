"""The recipe's `architecture:`: what an aarch64 build takes (cross packages, --cross-prefix,
the foreign Debian architecture), what it records, what its check demands and how its
packages are named. The orchestrator runs with the fake engine; the integration tests build
for real (tests/integration/test_arm64.py)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder import pipeline
from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.config.recipe import load_recipe, validate_recipe
from builder.errors import ArtifactError, RecipeError
from builder.formats import release_tarball
from builder.formats.architecture import AARCH64, X86_64, architecture
from builder.formats.checksums import sha256_bytes
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


# Every x86-64 recipe's cache keys (the plan's, and resolved at each series) and the x86-64
# package sources, as they were before `architecture:` came (b98c899): a digest of each
# recipe's keys in SERIES_VERSIONS order. A change meant to move a key updates these digests in
# its own commit; the arm64 work must not move them (the keys name images, outputs and MSI codes).
SERIES_VERSIONS = ("5.2.0", "7.2.0", "10.0.13", "10.2.2", "11.0.3", "11.1.1")
X86_KEYS_BEFORE_ARM64 = {
    "linux-static-qemu-10.0.yaml": "35de5bbc41a52bd3",
    "linux-static-qemu-10.2.yaml": "167e36bf9a93a9b3",
    "linux-static-qemu-11.0.yaml": "e3c19a9e56df052c",
    "linux-static-qemu-11.1.yaml": "b1f4b95e49901075",
    "linux-static-qemu-5.2.yaml": "c3923b8953e9614f",
    "linux-static-qemu-7.2.yaml": "1c99ea50178b0e22",
    "linux-static-ubuntu.yaml": "4b2b7fed9386af3e",
    "linux-static.yaml": "d8b36f08b570141e",
    "windows-msi-fedora.yaml": "beee00b68a7e3f75",
    "windows-msi-qemu-10.2.yaml": "cc187ae887b4c0c0",
    "windows-msi-qemu-11.1.yaml": "b1a4150953f73e34",
    "windows-msi.yaml": "8c74e3177292aa2f",
}
X86_PACKAGE_SOURCES_BEFORE_ARM64 = (
    "61f7aa73e1de3c75fd5548b6be2edf50edc1f64ebf99a0be01d61018c6d08985"
)
X86_TARBALL_FILES_BEFORE_ARM64 = "e0c0d2d110477dfb9eb79f9039d0221805353a5dc2c75d94cc9950c3e0940af2"


def _keys_digest(recipe: Path) -> str:
    plan, _ = load_plan(recipe, Overrides())
    keys = [plan.cache_key]
    for version in SERIES_VERSIONS:
        try:
            keys.append(series.resolve_plan(plan, version).cache_key)
        except Exception as exc:  # a recipe with fixed patches refuses other series
            keys.append(type(exc).__name__)
    return sha256_bytes(" ".join(keys).encode())[:16]


def test_the_default_machine_leaves_every_cache_key_as_it_was() -> None:
    """`architecture` joins the key only when it is not x86_64, and the cross build has its own
    Dockerfile: the keys (and the images, outputs and MSI codes named by them) of every x86-64
    recipe stay the same."""
    found = {
        recipe.name: _keys_digest(recipe)
        for recipe in sorted(RECIPES.glob("*.yaml"))
        if "architecture" not in _recipe_data(recipe.name)
    }
    assert found == X86_KEYS_BEFORE_ARM64
    plan, _ = load_plan(RECIPES / "linux-static.yaml", Overrides())
    assert plan.summary()["architecture"] == "x86_64"
    assert plan.inputs_key != replace(plan, architecture="aarch64").inputs_key


def _x86_spec() -> PackageSpec:
    return PackageSpec(
        name="qemu-ga-patched",
        version="10.0.13+qga1",
        revision="1",
        maintainer="A B <a@b.example>",
        exec_path="/usr/sbin/qemu-ga-patched-static",
        qemu_version="10.0.13",
        source_date_epoch=1700000000,
        fsfreeze_hook="#!/bin/sh\n",
    )


def test_the_x86_64_package_sources_and_tarball_are_as_they_were() -> None:
    """The .deb's debian/ tree, the .rpm's spec and rpmlintrc and the tarball's files of an
    x86-64 agent, byte for byte as before the arm64 work (so its packages are too)."""
    spec = _x86_spec()
    files = {**debian_tree(spec), **rpm_sources(spec)}
    text = {name: [data, mode] for name, (data, mode) in sorted(files.items())}
    assert sha256_bytes(json.dumps(text).encode()) == X86_PACKAGE_SOURCES_BEFORE_ARM64
    tar = release_tarball.contents(spec, b"\x7fELF")
    members = {name: [data.decode("latin1"), mode] for name, (data, mode) in sorted(tar.items())}
    assert sha256_bytes(json.dumps(members).encode()) == X86_TARBALL_FILES_BEFORE_ARM64
    assert "BuildArch: x86_64\n" in files["qemu-ga-patched.spec"][0]
    assert "any x86-64 Linux guest" in tar["README"][0].decode()


def test_the_arm64_package_texts_name_their_machine() -> None:
    spec = replace(_x86_spec(), architecture=AARCH64)
    tree = debian_tree(spec)
    overrides = tree["debian/qemu-ga-patched.lintian-overrides"][0]
    assert "any AArch64 Linux guest" in overrides and "x86" not in overrides
    rpmlintrc = rpm_sources(spec)["qemu-ga-patched.rpmlintrc"][0]
    assert "any AArch64 Linux guest" in rpmlintrc and "x86" not in rpmlintrc
    readme = release_tarball.contents(spec, b"\x7fELF")["README"][0].decode()
    assert "any AArch64 Linux guest" in readme and "x86" not in readme


def test_packages_are_named_and_marked_for_their_machine() -> None:
    spec = replace(_x86_spec(), architecture=AARCH64)
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
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG FOREIGN_ARCHITECTURE\n"
    )
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
    # Whichever order the lines come in, the same entry keeps the plain name.
    assert parse_inventory(reversed(lines)) == packages


def test_bump_compares_a_cross_lock_with_the_agents_machine() -> None:
    """An arm64 agent links the arm64 libraries: bump reads those entries of the lock (and the
    suite's arm64 index), not the build machine's."""
    from builder.commands.bump_locks import _locked_versions

    lock = {
        "libc6-dev": "2.41-12 amd64",
        "libc6-dev:arm64": "2.41-11 arm64",
        "libglib2.0-dev": "2.84.4-3 arm64",
        "tzdata": "2025b-4 all",
    }
    assert _locked_versions(lock, "arm64") == {
        "libc6-dev": "2.41-11",
        "libglib2.0-dev": "2.84.4-3",
        "tzdata": "2025b-4",
    }
    assert _locked_versions(lock, "amd64") == {"libc6-dev": "2.41-12", "tzdata": "2025b-4"}


def test_a_foreign_packages_purl_names_the_package_not_the_qualifier() -> None:
    from builder.formats.provenance import package_purl

    assert package_purl("libc6:arm64", "2.41-12 arm64") == (
        "pkg:deb/debian/libc6@2.41-12?arch=arm64"
    )


def test_an_aarch64_recipe_with_its_own_packages_lists_what_the_tool_runs() -> None:
    data = _recipe_data("linux-static-arm64.yaml")
    data["environment"]["packages"] = ["gcc-aarch64-linux-gnu", "libglib2.0-dev:arm64"]
    with pytest.raises(RecipeError, match=r"own environment\.packages needs qemu-user"):
        validate_recipe(data, "a.yaml")
    data["environment"]["packages"].append("qemu-user")
    assert validate_recipe(data, "a.yaml").architecture == "aarch64"


def test_an_aarch64_recipe_needs_a_dockerfile_that_takes_the_foreign_architecture(
    tmp_path: Path,
) -> None:
    data = _recipe_data("linux-static-arm64.yaml")
    shutil.copy(ROOT / "Dockerfile.linux", tmp_path)
    data["environment"]["dockerfile"] = "Dockerfile.linux"
    recipe = tmp_path / "arm.yaml"
    recipe.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match=r"Dockerfile\.linux takes no FOREIGN_ARCHITECTURE") as e:
        load_plan(recipe, Overrides())
    assert "Dockerfile.linux-cross" in (e.value.hint or "")


def test_vm_test_of_an_arm64_recipe_installs_its_deb() -> None:
    data = _recipe_data("linux-static-arm64.yaml") | {"vm_test": True}
    assert validate_recipe(data, "a.yaml").vm_test
    data["artifacts"] = [a for a in data["artifacts"] if a.get("kind") != "deb"]
    with pytest.raises(RecipeError, match=r"installs its \.deb: add a deb artifact"):
        validate_recipe(data, "a.yaml")


def test_vm_test_of_an_arm64_output_says_what_its_guest_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from builder.cli import main

    out = tmp_path / "linux-static-arm64"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"architecture": "aarch64", "artifacts": []}))
    code = main(["vm-test", str(out), "--fast"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "holds an agent for aarch64: --fast boots the bare agent in an x86-64 VM only" in err
    code = main(["vm-test", str(out), "--scenarios", "sysvinit"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "unknown sysvinit (the aarch64 guest is a systemd one)" in err
    code = main(["vm-test", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "holds no .deb" in err


def test_the_arm64_guest_boots_on_its_own_machine() -> None:
    """qemu-system-aarch64's virt machine with the arm64 console; x86-64 as it was."""
    from builder.caches.guest_image import GuestImage

    assert AARCH64.qemu_machine[:2] == ("-machine", "virt") and AARCH64.console == "ttyAMA0"
    assert X86_64.qemu_machine == ("-machine", "q35", "-accel", "tcg", "-cpu", "max")
    guest = GuestImage(
        "systemd", "sha256:1", Path("/g"), {"linux-image-6.12-arm64": "6.12"}, AARCH64
    )
    record = guest.record()
    assert (record["kernel_package"], record["architecture"]) == ("6.12", "aarch64")
    x86 = GuestImage(
        "systemd",
        "sha256:1",
        Path("/g"),
        {"linux-image-amd64": "1", "linux-image-6.12-amd64": "6.12"},
    )
    assert "architecture" not in x86.record() and x86.record()["kernel_package"] == "6.12"


def test_the_x86_64_guest_command_line_is_as_it_was() -> None:
    """The x86-64 guest boots as before the arm64 guest came (q35, console ttyS0); the arm64
    one on the virt machine with its console."""
    from builder.host.guest_vm import qemu_command

    work = Path("/tmp/w")
    x86 = qemu_command("qemu", Path("/k"), Path("/i"), work, True, 1024, X86_64)
    assert x86 == [
        "qemu",
        *("-machine", "q35", "-accel", "tcg", "-cpu", "max"),
        *("-smp", "1", "-m", "1024", "-nodefaults", "-display", "none"),
        *("-kernel", "/k", "-initrd", "/i"),
        "-append",
        "root=/dev/vda rw console=ttyS0 panic=-1 quiet systemd.firstboot=off "
        "systemd.wants=qga-scenario.service qga.scenario",
        *("-drive", "file=/tmp/w/disk.qcow2,format=qcow2,if=virtio"),
        *("-drive", "file=/tmp/w/payload.tar,format=raw,if=virtio,readonly=on"),
        *("-chardev", "file,id=console0,path=/tmp/w/console.log,append=on"),
        *("-serial", "chardev:console0"),
        "-no-reboot",
        *("-chardev", "socket,id=qga0,path=/tmp/w/qga.sock,server=on,wait=off"),
        *("-device", "virtio-serial-pci,id=vs0"),
        *("-device", "virtserialport,bus=vs0.0,chardev=qga0,name=org.qemu.guest_agent.0"),
    ]
    arm = qemu_command("qemu", Path("/k"), Path("/i"), work, False, 1024, AARCH64)
    assert arm[1:7] == ["-machine", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on"]
    assert "console=ttyAMA0" in arm[arm.index("-append") + 1]
    assert "virtio-serial-pci,id=vs0" not in arm  # no port asked for
