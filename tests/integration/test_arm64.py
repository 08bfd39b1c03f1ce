"""The arm64 agent (recipes/linux-static-arm64.yaml), built for real: a static, stripped
AArch64 ELF cross-compiled in the Debian build image, its packages named and marked for arm64
with the same files as x86-64's, its sums checkable, and the agent itself (run through
qemu-aarch64, called explicitly in a container: no binfmt_misc registration) keeping the contract
that `vm-test` runs and passing FIREWHEEL's own driver; then the .deb and .rpm installed in a
booted arm64 Debian guest (qemu-system-aarch64, TCG) as users install them, the agent started
by udev and systemd, and FIREWHEEL's driver against that agent."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import pytest

from builder.agent import contract
from builder.agent.client import AgentClient, AgentError
from builder.agent.guest_scripts import LIB, scenario_script
from builder.agent.guest_test import STEP
from builder.caches import arm64_guest
from builder.engine import Engine
from builder.formats.architecture import AARCH64
from builder.formats.elf import read_elf
from builder.formats.packages import RpmInfo, read_deb, read_rpm
from builder.host import guest_vm
from builder.host.cache import Cache
from builder.stages import series
from tests.agents import (
    RunningAgent,
    firewheel_driver,
    firewheel_loses_nothing,
    firewheel_sees_output_while_running,
)
from tests.helpers import ARM64_RECIPE, artifact_of, run_cli
from tests.integration.conftest import series_source

# The arm64 build is `make test-all`'s for now: `make test` keeps its measured cold time until
# the arm64 booted guest lands and both are measured together (README: Tests).
pytestmark = pytest.mark.full
VERSION = "10.0.13+qga1"


@contextmanager
def _qemu_aarch64(build: Path, workdir: Path) -> Iterator[tuple[str, ...]]:
    """What runs the arm64 agent here: `qemu-aarch64` called explicitly (nothing registered with
    binfmt_misc) in a container of the output's own build image, offline, with the output and
    the agent's directory mounted at their paths (its socket is reached from the host). A box,
    not the host's qemu-user: Debian 12's 7.2 aborts in a guest-exec child (a qemu assertion
    after fork), the build image's trixie 10.0 does not."""
    image = json.loads((build / "manifest.json").read_text())["environment"]["image"]["id"]
    name = f"qga-test-arm64-{uuid.uuid4().hex[:12]}"
    runner = (
        "docker", "run", "--rm", "--name", name, "--network", "none", "--user", "0",
        "-v", f"{workdir}:{workdir}", "-v", f"{build}:{build}:ro", image, AARCH64.qemu_user,
    )  # fmt: skip
    try:
        yield runner
    finally:  # killing the docker client leaves its container: removed here
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


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
    with _qemu_aarch64(arm64_build, short_tmp) as runner:
        agent = RunningAgent(artifact_of(arm64_build, "static-elf"), short_tmp, runner)
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
    with (
        _qemu_aarch64(arm64_build, short_tmp) as runner,
        firewheel_driver(agent, short_tmp, runner) as driver,
    ):
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


REBOOTED = {"installed", "starts-on-install", "contract", "starts-at-boot", "removed-and-purged"}


def test_the_arm64_packages_run_where_users_install_them(arm64_build: Path, tmp_path: Path) -> None:
    """`vm-test` of the arm64 output as a user runs it: every scenario of the arm64 guest
    (systemd and udev on Debian's arm64 kernel), with upgrade, reboot, removal and purge."""
    out = tmp_path / "linux-static-arm64"
    shutil.copytree(arm64_build, out)  # vm-test records its report in the manifest
    result = run_cli("vm-test", str(out), timeout=7200)  # the guest's second stage included
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads(result.stdout)
    assert report["mode"] == "guest" and report["passed"]
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert list(scenarios) == ["systemd", "no-port", "replace", "rpm"]
    passed = {
        name: {c["name"] for c in s["checks"] if c["passed"]} for name, s in scenarios.items()
    }
    assert passed["systemd"] == REBOOTED | {"distribution-paths", "fsfreeze-hook", "upgrade"}
    assert passed["rpm"] == REBOOTED | {"upgrade"}
    assert scenarios["systemd"]["boot_to_answer_seconds"] > 0
    guest = report["guests"]["systemd"]
    assert guest["architecture"] == "aarch64" and guest["systemd"]
    kernels = {k: v for k, v in guest["packages"].items() if k.startswith("linux-image-")}
    versioned = [k for k in kernels if k != "linux-image-arm64" and k.endswith("-arm64")]
    assert len(versioned) == 1 and guest["kernel_package"] == kernels[versioned[0]]
    release = versioned[0].removeprefix("linux-image-")
    booted = scenarios["systemd"]["guest"]["booted"]  # the guest's own uname -r
    assert f"kernel={release} " in booted and "init=systemd" in booted
    assert json.loads((out / "manifest.json").read_text())["vm_test"] == report


@pytest.fixture
def arm64_guest_agent(arm64_build: Path, engine: Engine) -> Iterator[guest_vm.RunningGuest]:
    """A booted arm64 guest with the .deb installed by dpkg: its agent, started by udev and
    systemd, on the port the host reaches."""
    from builder.log import Progress

    cache = Cache.default()
    progress = Progress(total=1, log_dir=cache.runs / "test-arm64-guest")
    with progress.step("arm64 guest") as output:
        guest = arm64_guest.ensure_arm64_guest(engine, cache, output)
    deb = next(arm64_build.glob("*_arm64.deb"))
    files = {
        "lib.sh": f"AGENT=/usr/sbin/qemu-ga-patched-static\n{LIB}".encode(),
        "scenario.sh": scenario_script("systemd").encode(),
        "v1.deb": deb.read_bytes(),
    }
    payload = guest_vm.payload_tar(files)
    with guest_vm.boot(guest.kernel, guest.initrd, guest.disk, payload, arch=AARCH64) as running:
        installed = running.wait_for("installed", STEP * AARCH64.tcg_slowdown)
        assert installed == "0", running.console_tail()
        yield running


def test_firewheel_driver_in_the_booted_arm64_guest(
    arm64_guest_agent: guest_vm.RunningGuest,
) -> None:
    """FIREWHEEL's own driver on the agent systemd started in the arm64 guest: output while
    the command runs, and nothing lost over thousands of polls."""
    from firewheel.vm_resource_manager.drivers.qemu_guest_agent_driver import (
        QemuGuestAgentDriver,
    )

    # The agent answers once udev has started it: waited for with our own client (FIREWHEEL's
    # driver syncs without a time limit), then the driver connects to an agent that answers.
    deadline = time.monotonic() + 600
    while True:
        try:
            client = AgentClient.connect_unix(str(arm64_guest_agent.socket), timeout=5)
            try:
                client.sync(timeout=10)
            finally:
                client.close()  # the port takes one client: FIREWHEEL's, next
            break
        except (AgentError, OSError):
            assert time.monotonic() < deadline, arm64_guest_agent.console_tail()
            time.sleep(2)
    driver = QemuGuestAgentDriver({"path": str(arm64_guest_agent.socket)}, logging.getLogger("fw"))
    try:
        workdir = PurePosixPath("/run")

        def touch(path: PurePosixPath) -> None:
            driver.execute("/bin/touch", [str(path)])

        firewheel_sees_output_while_running(driver, workdir, touch)
        firewheel_loses_nothing(driver, deadline=600)  # the arm64 guest runs 3000 sleeps slowly
    finally:
        driver.close()


@pytest.mark.parametrize(
    "qemu_series", [s for s in series.supported_series() if s != "10.0"]
)  # 10.0 is the recipe's own source, built above
def test_every_series_builds_for_arm64(qemu_series: str, tmp_path: Path) -> None:
    """The arm64 recipe with `--source` set to another series' pinned tarball: that series'
    patch set, Debian suite and packages, made arm64, cross-compiled; the check stage ran the
    agent's --version and -D through qemu-aarch64 in the build container."""
    out = tmp_path / f"arm64-{qemu_series}"
    source = series_source(qemu_series)
    result = run_cli(
        "run", str(ARM64_RECIPE), "--source", str(source), "--output", str(out),
        "--log-format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["architecture"], manifest["series"]["series"]) == ("aarch64", qemu_series)
    elf = read_elf(artifact_of(out, "static-elf"))
    assert elf.machine == AARCH64.elf_machine and elf.interpreter is None and not elf.needed
    assert any(out.glob("*_arm64.deb")) and any(out.glob("*.aarch64.rpm"))
