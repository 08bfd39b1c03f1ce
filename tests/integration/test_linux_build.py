"""The default recipe, built end to end through the real Docker engine: what lands in out/."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.engine import Engine
from builder.formats.elf import read_elf
from builder.pipeline import stage_names
from tests.helpers import DEFAULT_RECIPE, leftover_containers


def test_output_has_the_release_files(patched_build: Path) -> None:
    names = sorted(p.name for p in patched_build.iterdir())
    assert names == sorted(
        [
            "SHA256SUMS",
            "logs",
            "manifest.json",
            "provenance.intoto.json",
            "qemu-ga-patched-static",
            "qemu-ga-patched_10.0.13+qga1-1_amd64.deb",
            "qemu-ga-patched-10.0.13+qga1-1.x86_64.rpm",
            "qemu-ga-patched-10.0.13+qga1-linux-x86_64.tar.gz",
            "qemu-guest-agent.conf",
            "qemu-guest-agent.init",
            "qemu-guest-agent.service",
            "sbom.spdx.json",
        ]
    )


def test_the_sbom_names_what_the_link_took(patched_build: Path) -> None:
    """From the real link map and dpkg in the real build image: valid SPDX (spdx-tools), the
    relink byte for byte the agent, glib and glibc by their exact versions (the manifest's)."""
    from tests.unit.test_sbom import validate

    validate(patched_build / "sbom.spdx.json")
    document = json.loads((patched_build / "sbom.spdx.json").read_text())
    manifest = json.loads((patched_build / "manifest.json").read_text())
    assert "byte for byte" in document["comment"]
    libraries = {
        p["name"]: p for p in document["packages"] if p["SPDXID"].startswith("SPDXRef-Debian")
    }
    packages = manifest["environment"]["packages"]
    glib = packages["libglib2.0-dev"].split()[0]
    assert libraries["glib2.0"]["versionInfo"] == glib
    purls = [r["referenceLocator"] for r in libraries["glib2.0"]["externalRefs"]]
    assert f"pkg:deb/debian/glib2.0@{glib}?arch=source&distro=debian-13" in purls
    assert "libglib-2.0.a" in libraries["glib2.0"]["comment"]
    assert libraries["glibc"]["versionInfo"] == packages["libc6-dev"].split()[0]
    sums = {a["name"]: a["sha256"] for a in manifest["artifacts"]}
    agent = next(p for p in document["packages"] if p["name"] == "qemu-ga-patched-static")
    assert agent["checksums"][0]["checksumValue"] == sums["qemu-ga-patched-static"]


def test_sha256sum_accepts_the_checksums(patched_build: Path) -> None:
    result = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=patched_build, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "qemu-ga-patched-static: OK" in result.stdout


def test_binary_is_static_stripped_and_runs_here(patched_build: Path) -> None:
    binary = patched_build / "qemu-ga-patched-static"
    info = read_elf(binary)
    assert info.interpreter is None and info.needed == ()
    assert info.is_stripped
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    manifest = json.loads((patched_build / "manifest.json").read_text())
    assert f"QEMU Guest Agent {manifest['qemu_version']}" in version.stdout
    assert manifest["qemu_version"].startswith("10.0.")


def test_manifest_records_every_input(patched_build: Path) -> None:
    manifest = json.loads((patched_build / "manifest.json").read_text())
    assert manifest["tool"]["name"] == "qga-builder"
    assert (
        len(manifest["recipe"]["sha256"]) == 64
        and "name: linux-static" in manifest["recipe"]["text"]
    )
    assert manifest["source"]["kind"] == "debian" and len(manifest["source"]["sha256"]) == 64
    assert (
        manifest["patches"][0]["name"].startswith("0001-")
        and len(manifest["patches"][0]["sha256"]) == 64
    )
    env = manifest["environment"]
    assert env["image"]["id"].startswith("sha256:") and env["image"]["tag"].startswith(
        "qga-builder/"
    )
    assert env["base"]["kind"] == "debootstrap" and env["base"]["image_id"].startswith("sha256:")
    assert env["packages"]["gcc"] and env["packages"]["libglib2.0-dev"]
    assert "--static" in manifest["build"]["configure"]
    assert manifest["build"]["source_date_epoch"] > 1_600_000_000
    assert manifest["started"] <= manifest["finished"]
    digests = {a["name"]: a["sha256"] for a in manifest["artifacts"]}
    sums = dict(
        reversed(line.split("  "))
        for line in (patched_build / "SHA256SUMS").read_text().splitlines()
    )
    assert digests == sums


def test_a_log_per_step(patched_build: Path) -> None:
    logs = sorted(p.name for p in (patched_build / "logs").iterdir())
    for number, stage in enumerate(stage_names(load_plan(DEFAULT_RECIPE, Overrides())[0])[:-1], 1):
        assert f"{number:02d}-{stage}.log" in logs
    compile_log = next((patched_build / "logs").glob("*-compile.log")).read_text()
    assert "qemu-ga" in compile_log


def test_service_files_start_the_patched_binary(patched_build: Path) -> None:
    unit = (patched_build / "qemu-guest-agent.service").read_text()
    assert "ExecStart=/usr/sbin/qemu-ga-patched-static" in unit and "[Install]" in unit
    init = patched_build / "qemu-guest-agent.init"
    assert init.stat().st_mode & 0o111
    assert subprocess.run(["sh", "-n", str(init)]).returncode == 0
    assert (
        "exec /usr/sbin/qemu-ga-patched-static"
        in (patched_build / "qemu-guest-agent.conf").read_text()
    )


def test_no_containers_left(patched_build: Path, unpatched_build: Path, engine: Engine) -> None:
    assert leftover_containers(engine) == []


def test_unchanged_image_is_reused(unpatched_build: Path, patched_build: Path) -> None:
    first = json.loads((patched_build / "manifest.json").read_text())["environment"]["image"]
    second = json.loads((unpatched_build / "manifest.json").read_text())["environment"]["image"]
    assert first["inputs_hash"] == second["inputs_hash"]
    assert second["id"] == first["id"]  # built once: the other run waited and reused it
