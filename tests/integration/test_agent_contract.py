"""The built agent behaves as patched: run it on this host on a unix socket and drive it over
QMP as FIREWHEEL's driver does, through the same contract `vm-test` runs in a VM
(`builder.agent.contract`), and through FIREWHEEL's own driver. The unpatched build (same
recipe, no patch) shows the difference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builder.agent import contract
from builder.agent.client import AgentClient
from tests.agents import (
    RunningAgent,
    firewheel_driver,
    firewheel_loses_nothing,
    firewheel_sees_output_while_running,
    poll,
)
from tests.helpers import artifact_of


@pytest.fixture
def patched_agent(patched_build: Path, short_tmp: Path) -> Iterator[RunningAgent]:
    agent = RunningAgent(patched_build / "qemu-ga-patched-static", short_tmp)
    yield agent
    agent.stop()


@pytest.fixture
def unpatched_agent(unpatched_build: Path, short_tmp: Path) -> Iterator[RunningAgent]:
    agent = RunningAgent(artifact_of(unpatched_build, "static-elf"), short_tmp)
    yield agent
    agent.stop()


@pytest.mark.parametrize("scenario", contract.SCENARIOS, ids=lambda s: s.__name__)
def test_patched_agent_keeps_the_contract(
    patched_agent: RunningAgent, scenario: Callable[[AgentClient], str]
) -> None:
    detail = scenario(patched_agent.client)
    assert detail
    assert patched_agent.process.poll() is None  # the agent is still running


def test_unpatched_agent_holds_output_until_exit(unpatched_agent: RunningAgent) -> None:
    with pytest.raises(AssertionError, match=r"no output while running \(got b'', b''\)"):
        contract.partial_output(unpatched_agent.client)
    # Everything else upstream does the same: exit codes, signals.
    assert contract.exit_codes(unpatched_agent.client)
    assert contract.signal_reported(unpatched_agent.client)


@pytest.fixture
def firewheel(patched_build: Path, unpatched_build: Path, short_tmp: Path, request):
    build = patched_build if request.param == "patched" else unpatched_build
    with firewheel_driver(artifact_of(build, "static-elf"), short_tmp) as driver:
        yield driver


@pytest.mark.parametrize("firewheel", ["patched"], indirect=True)
def test_firewheel_driver_sees_output_while_running_without_false_truncation(
    firewheel, short_tmp: Path
) -> None:
    firewheel_sees_output_while_running(firewheel, short_tmp)


@pytest.mark.parametrize("firewheel", ["patched"], indirect=True)
def test_firewheel_driver_loses_nothing_over_thousands_of_polls(firewheel) -> None:
    firewheel_loses_nothing(firewheel)


@pytest.mark.parametrize("firewheel", ["unpatched"], indirect=True)
def test_firewheel_driver_on_the_unpatched_agent_shows_the_difference(
    firewheel, short_tmp: Path
) -> None:
    gate = short_tmp / "go"
    pid = firewheel.execute(
        "/bin/sh", ["-c", f"echo early; while [ ! -e {gate} ]; do sleep 0.05; done; echo late"]
    )
    for _ in range(40):
        status = firewheel.exec_status(pid)
        time.sleep(0.05)
    assert "stdout" not in status and not status.get("exited")  # nothing while it runs
    gate.touch()
    status, _ = poll(firewheel, pid, lambda s: s.get("exited"))
    assert status["stdout"] == "early\nlate\n"
    assert status.get("stdout_trunc") is True  # upstream's out-truncated: false, read as cut
