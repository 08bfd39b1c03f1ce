"""The built agent behaves as patched: run it on this host on a unix socket and drive it over
QMP as FIREWHEEL's driver does, through the same contract `vm-test` runs in a VM
(`builder.agent.contract`). The unpatched build (same recipe, no patch) shows the difference.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builder.agent import contract
from builder.agent.client import AgentClient


class RunningAgent:
    def __init__(self, binary: Path, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "qga.sock"
        self.log = (workdir / "agent.log").open("w")
        self.process = subprocess.Popen(
            [str(binary), "-m", "unix-listen", "-p", str(self.socket), "-t", str(workdir)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.client = AgentClient.connect_unix(str(self.socket))
        self.client.sync()

    def stop(self) -> None:
        self.client.close()
        self.process.kill()
        self.process.wait()
        self.log.close()


@pytest.fixture
def patched_agent(patched_build: Path, short_tmp: Path) -> Iterator[RunningAgent]:
    agent = RunningAgent(patched_build / "qemu-ga-patched-static", short_tmp)
    yield agent
    agent.stop()


@pytest.fixture
def unpatched_agent(unpatched_build: Path, short_tmp: Path) -> Iterator[RunningAgent]:
    agent = RunningAgent(unpatched_build / "qemu-ga-patched-static", short_tmp)
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
