"""The arm64 agent (recipes/linux-static-arm64.yaml), built for real: a static, stripped
AArch64 ELF cross-compiled in the Debian build image, its packages named and marked for arm64
with the same files as x86-64's, its sums checkable, and the agent itself (run on this host
through qemu-aarch64, called explicitly: no binfmt_misc registration) keeping the contract
that `vm-test` runs and passing FIREWHEEL's own driver."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builder.agent import contract
from builder.agent.client import AgentClient
from builder.formats.architecture import AARCH64
from builder.formats.elf import read_elf
from builder.formats.packages import RpmInfo, read_deb, read_rpm
from tests.agents import (
    RunningAgent,
    firewheel_driver,
    firewheel_loses_nothing,
    firewheel_sees_output_while_running,
)
from tests.helpers import ARM64_RECIPE, artifact_of, run_cli

# The arm64 build is `make test-all`'s for now: `make test` keeps its measured cold time until
# the arm64 booted guest lands and both are measured together (README: Tests).
pytestmark = pytest.mark.full
VERSION = "10.0.13+qga1"


def _qemu_aarch64() -> tuple[str, ...]:
    path = shutil.which(AARCH64.qemu_user)
    assert path, "qemu-aarch64 is missing: scripts/setup.sh --test installs qemu-user"
    return (path,)


def test_the_arm64_agent_is_static_aarch64_stripped_and_recorded(arm64_build: Path) -> None:
    agent = artifact_of(arm64_build, "static-elf")
    assert agent.name == f"qemu-ga-patched-{VERSION}-linux-aarch64-static"
    elf = read_elf(agent)
    assert elf.machine == AARCH64.elf_machine and elf.bits == 64
    assert elf.interpreter is None and elf.needed == () and elf.is_stripped
    manifest = json.loads((arm64_build / "manifest.json").read_text())
    assert (manifest["target"], manifest["architecture"]) == ("linux", "aarch64")
    assert manifest["build"]["configure"].startswith("configure --cross-prefix=aarch64-linux-gnu-")
    assert manifest["environment"]["packages"]["gcc-aarch64-linux-gnu"]
    names = {artifact["name"] for artifact in manifest["artifacts"]}
    assert {
        f"qemu-ga-patched_{VERSION}-1_arm64.deb",
        f"qemu-ga-patched-{VERSION}-1.aarch64.rpm",
        f"qemu-ga-patched-{VERSION}-linux-aarch64.tar.gz",
    } <= names
    checked = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"],
        cwd=arm64_build,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (arm64_build / "provenance.intoto.json").is_file()


def test_the_arm64_packages_carry_what_the_x86_64_ones_do(
    arm64_build: Path, patched_build: Path
) -> None:
    arm_deb = read_deb(next(arm64_build.glob("*_arm64.deb")))
    x86_deb = read_deb(next(patched_build.glob("*_amd64.deb")))
    assert arm_deb.control["Architecture"] == "arm64"
    assert set(arm_deb.data) == set(x86_deb.data)
    binary = "usr/sbin/qemu-ga-patched-static"
    assert arm_deb.data[binary] == artifact_of(arm64_build, "static-elf").read_bytes()
    overrides = "usr/share/lintian/overrides/qemu-ga-patched"
    for name in set(arm_deb.data) - {binary, overrides}:  # units, udev rule, defaults, hook
        assert arm_deb.data[name] == x86_deb.data[name], name
    assert b"any AArch64 Linux guest" in arm_deb.data[overrides]
    assert b"x86" not in arm_deb.data[overrides]
    assert arm_deb.conffiles == x86_deb.conffiles
    arm_rpm = read_rpm(next(arm64_build.glob("*.aarch64.rpm")))
    x86_rpm = read_rpm(next(patched_build.glob("*.x86_64.rpm")))
    assert (arm_rpm.tags["arch"], x86_rpm.tags["arch"]) == ("aarch64", "x86_64")
    assert set(arm_rpm.files) == set(x86_rpm.files)
    assert arm_rpm.config_files == x86_rpm.config_files
    assert arm_rpm.tags["filedigests"] != x86_rpm.tags["filedigests"]  # the agent differs
    assert _rpm_digests(arm_rpm, binary) == _rpm_digests(x86_rpm, binary)  # nothing else
    logs = "".join(path.read_text() for path in (arm64_build / "logs").glob("*package*.log"))
    assert "lintian: no errors" in logs and "rpmlint: no errors" in logs


def _rpm_digests(rpm: RpmInfo, leave_out: str) -> dict[str, object]:
    """Path -> file digest of every file of the .rpm but one."""
    digests = rpm.tags["filedigests"]
    assert isinstance(digests, list)
    return {
        path: digest
        for path, digest in zip(rpm.files, digests, strict=True)
        if path != "/" + leave_out
    }


@pytest.fixture
def arm64_agent(arm64_build: Path, short_tmp: Path) -> Iterator[RunningAgent]:
    agent = RunningAgent(artifact_of(arm64_build, "static-elf"), short_tmp, _qemu_aarch64())
    yield agent
    agent.stop()


@pytest.mark.parametrize("scenario", contract.SCENARIOS, ids=lambda s: s.__name__)
def test_the_arm64_agent_keeps_the_contract_under_qemu_aarch64(
    arm64_agent: RunningAgent, scenario: Callable[[AgentClient], str]
) -> None:
    assert scenario(arm64_agent.client)
    assert arm64_agent.process.poll() is None  # the agent is still running


@pytest.fixture
def arm64_firewheel(arm64_build: Path, short_tmp: Path) -> Iterator[object]:
    agent = artifact_of(arm64_build, "static-elf")
    with firewheel_driver(agent, short_tmp, _qemu_aarch64()) as driver:
        yield driver


def test_firewheel_driver_sees_arm64_output_while_running(
    arm64_firewheel: object, short_tmp: Path
) -> None:
    firewheel_sees_output_while_running(arm64_firewheel, short_tmp)


def test_firewheel_driver_loses_nothing_from_the_arm64_agent(arm64_firewheel: object) -> None:
    firewheel_loses_nothing(arm64_firewheel)


def test_two_varied_arm64_builds_are_identical(tmp_path: Path) -> None:
    """`verify`: two cross builds in other build roots, hostnames, umasks and times give the
    same bytes, the packages included."""
    out = tmp_path / "verify"
    result = run_cli("verify", str(ARM64_RECIPE), "--output", str(out), "--log-format", "json")
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "verify.json").read_text())
    assert f"qemu-ga-patched-{VERSION}-linux-aarch64-static" in summary["identical"]
    for suffix in ("_arm64.deb", ".aarch64.rpm", "-linux-aarch64.tar.gz"):
        assert any(name.endswith(suffix) for name in summary["identical"]), suffix
    assert summary["different"] == [] and summary["missing"] == []
