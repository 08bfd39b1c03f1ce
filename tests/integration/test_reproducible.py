"""Reproducibility with real builds: `verify` builds the default recipe twice (other build root,
hostname, umask, time; fresh containers) under a toolchain lock, and every artifact is identical.
Published checksums catch a tampered artifact; provenance describes the real build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from builder.formats.checksums import parse_sha256sums
from tests.helpers import leftover_containers, run_cli, write_variant


@pytest.fixture(scope="module")
def locked_recipe(tmp_path_factory: pytest.TempPathFactory, patched_build: Path) -> Path:
    recipe = write_variant(tmp_path_factory.mktemp("locked"), "linux-static")
    result = run_cli("lock", str(recipe), "--log-format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gcc " in recipe.with_suffix(".lock").read_text()
    return recipe


@pytest.mark.full  # make test: one rebuild against the published sums (below)
def test_verify_two_varied_builds_are_identical(
    locked_recipe: Path, tmp_path: Path, engine
) -> None:
    out = tmp_path / "verify"
    result = run_cli(
        "verify", str(locked_recipe), "--locked", "--output", str(out), "--log-format", "json"
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "verify.json").read_text())
    assert "qemu-ga-patched-static" in summary["identical"]
    for suffix in ("_amd64.deb", ".x86_64.rpm", "-linux-x86_64.tar.gz"):  # packages too
        assert any(name.endswith(suffix) for name in summary["identical"]), suffix
    assert summary["different"] == [] and summary["missing"] == []
    manifests = [json.loads((out / tag / "manifest.json").read_text()) for tag in "ab"]
    # The two builds really ran in different places.
    assert manifests[0]["build"]["configure"] != manifests[1]["build"]["configure"]
    sums = [parse_sha256sums((out / tag / "SHA256SUMS").read_text()) for tag in "ab"]
    assert sums[0] == sums[1]
    assert leftover_containers(engine) == []


def test_locked_run_stops_on_a_changed_toolchain(locked_recipe: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "linux-static.yaml"
    for path in locked_recipe.parent.iterdir():  # the recipe, its Dockerfile and patches
        if path.is_file():
            shutil.copy(path, tmp_path / path.name)
    lock = locked_recipe.with_suffix(".lock").read_text()
    gcc_line = next(line for line in lock.splitlines() if line.startswith("gcc "))
    recipe.with_suffix(".lock").write_text(lock.replace(gcc_line, "gcc 0:0.1-1 amd64"))
    out = tmp_path / "out"
    result = run_cli("run", str(recipe), "--locked", "--output", str(out))
    assert result.returncode == 3, result.stderr[-3000:]
    assert "packages differ from" in result.stderr and "~ gcc: lock 0:0.1-1 amd64" in result.stderr
    assert "] configure" not in result.stderr and not out.exists()


def test_tampered_artifact_is_reported(patched_build: Path, tmp_path: Path) -> None:
    copy = tmp_path / "release"
    shutil.copytree(patched_build, copy)
    ok = run_cli("verify", str(copy))
    assert ok.returncode == 0, ok.stderr
    binary = copy / "qemu-ga-patched-static"
    data = bytearray(binary.read_bytes())
    data[-1] ^= 0xFF
    binary.write_bytes(bytes(data))
    bad = run_cli("verify", str(copy), "--against", str(patched_build / "SHA256SUMS"))
    assert bad.returncode == 10
    assert "differ: qemu-ga-patched-static" in bad.stderr and "Traceback" not in bad.stderr


def test_build_against_published_checksums(patched_build: Path, tmp_path: Path) -> None:
    from tests.helpers import DEFAULT_RECIPE

    result = run_cli(
        "verify",
        str(DEFAULT_RECIPE),
        "--against",
        str(patched_build / "SHA256SUMS"),
        "--output",
        str(tmp_path / "v"),
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_provenance_describes_the_build(patched_build: Path) -> None:
    doc = json.loads((patched_build / "provenance.intoto.json").read_text())
    sums = parse_sha256sums((patched_build / "SHA256SUMS").read_text())
    assert {s["name"]: s["digest"]["sha256"] for s in doc["subject"]} == sums
    manifest = json.loads((patched_build / "manifest.json").read_text())
    deps = {d["name"]: d for d in doc["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps["source"]["digest"]["sha256"] == manifest["source"]["sha256"]
    assert deps["build-image"]["digest"]["sha256"] == manifest["environment"]["image"]["id"][7:]
    assert (
        len([d for d in deps.values() if d["uri"].startswith("pkg:deb/")])
        == len(manifest["environment"]["packages"]) + 1
    )  # every package, and the Debian source package


@pytest.mark.full
def test_verify_windows_msi_and_exe_are_identical(
    tmp_path: Path, engine, windows_build: Path
) -> None:
    from tests.helpers import WINDOWS_RECIPE

    out = tmp_path / "verify-windows"
    result = run_cli("verify", str(WINDOWS_RECIPE), "--output", str(out), "--log-format", "json")
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "verify.json").read_text())
    assert sorted(summary["identical"]) == ["qemu-ga-x86_64.msi", "qemu-ga.exe"]
    contents = [
        json.loads((out / tag / "manifest.json").read_text())["msi_contents"] for tag in "ab"
    ]
    assert contents[0] == contents[1]  # every DLL inside the MSI, too
    codes = contents[0]["qemu-ga-x86_64.msi"]
    assert codes["upgrade_code"] == "{EB6B8302-C06E-4BEC-ADAC-932C68A3A98D}"  # upgrades still work
    assert leftover_containers(engine) == []
