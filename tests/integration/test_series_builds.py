"""Every supported QEMU series, built for real by the default recipe with `--source`: the tool
reads the source's VERSION and takes that series' patch set, base suite, packages and configure
flags. Each agent passes the contract in the VM (during its build) and on this host, and drives
FIREWHEEL's own driver; upstream 7.2 without our patch shows the difference."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.agent import contract
from builder.agent.client import AgentClient
from tests.agents import (
    RunningAgent,
    firewheel_driver,
    firewheel_loses_nothing,
    firewheel_sees_output_while_running,
)
from tests.helpers import artifact_of
from tests.integration.conftest import SeriesBuilds, series_params

SUITES = {
    "11.1": "trixie",
    "11.0": "trixie",
    "10.2": "trixie",
    "7.2": "bookworm",
    "5.2": "bullseye",
}


@pytest.mark.parametrize("series", series_params())
def test_the_default_recipe_builds_the_series_the_source_is(
    series_builds: SeriesBuilds, series: str
) -> None:
    manifest = json.loads((series_builds[series] / "manifest.json").read_text())
    assert manifest["qemu_version"].startswith(series + ".")
    record = manifest["series"]
    assert record["series"] == series and record["patch_set"] == f"patches/qemu-{series}/"
    assert record["chose"] == ["base", "configure", "packages", "patches"]
    assert (
        record["suite"] == SUITES[series]
        and SUITES[series] in manifest["environment"]["distribution"]
    )
    assert [p["name"] for p in manifest["patches"]] == list(record["patches"])
    agent = next(a for a in manifest["artifacts"] if a["kind"] == "static-elf")
    assert agent["detail"].startswith("ELF64 static")
    # Its .deb in a booted guest: started by udev/systemd with no flag, Debian's paths.
    vm = manifest["vm_test"]
    assert vm["passed"] and vm["mode"] == "guest" and vm["scenarios_passed"] == ["systemd"]
    checks = {c["name"] for c in vm["scenarios"][0]["checks"] if c["passed"]}
    assert {"starts-on-install", "distribution-paths", "contract", "fsfreeze-hook"} <= checks
    assert manifest["agent_paths"]["statedir"] == "/var/run"


@pytest.mark.parametrize("series", series_params())
@pytest.mark.parametrize("scenario", contract.SCENARIOS, ids=lambda s: s.__name__)
def test_every_series_keeps_the_contract_on_this_host(
    series_builds: SeriesBuilds,
    series: str,
    scenario: Callable[[AgentClient], str],
    short_tmp: Path,
) -> None:
    agent = RunningAgent(series_builds[series] / "qemu-ga-patched-static", short_tmp)
    try:
        assert scenario(agent.client)
    finally:
        agent.stop()


@pytest.mark.parametrize("series", series_params())
def test_every_series_serves_firewheels_driver(
    series_builds: SeriesBuilds, series: str, short_tmp: Path
) -> None:
    binary = series_builds[series] / "qemu-ga-patched-static"
    with firewheel_driver(binary, short_tmp) as driver:
        firewheel_sees_output_while_running(driver, short_tmp)
        firewheel_loses_nothing(driver)


@pytest.mark.full
def test_upstream_7_2_holds_output_and_reports_truncation_wrongly(
    unpatched_old_build: Path, short_tmp: Path
) -> None:
    agent = RunningAgent(artifact_of(unpatched_old_build, "static-elf"), short_tmp)
    try:
        with pytest.raises(AssertionError, match="no output while running"):
            contract.partial_output(agent.client)
        # More than 16 MiB: upstream 7.2 says "out-truncated": false although it cut the output.
        pid = agent.client.exec("/bin/sh", ["-c", "head -c 20971520 /dev/zero"])
        status: dict = {}
        end = time.monotonic() + 60
        while not status.get("exited"):
            assert time.monotonic() < end, "upstream 7.2 did not finish printing"
            status = agent.client.exec_status(pid)
            time.sleep(0.05)
        assert status["exited"] and len(base64.b64decode(status["out-data"])) == contract.OUTPUT_CAP
        assert status.get("out-truncated") is False  # wrong: the output was cut
    finally:
        agent.stop()
