"""The built agent behaves as patched: run it on this host on a unix socket and drive it over
QMP as FIREWHEEL's driver does, through the same contract `vm-test` runs in a VM
(`builder.agent.contract`). The unpatched build (same recipe, no patch) shows the difference.
"""

from __future__ import annotations

import logging
import subprocess
import time
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


@pytest.fixture
def firewheel(patched_build: Path, unpatched_build: Path, short_tmp: Path, request):
    """FIREWHEEL's own driver (PyPI's firewheel 3.1.0 with qemu.qmp 0.0.3) on a fresh agent."""
    from firewheel.vm_resource_manager.drivers.qemu_guest_agent_driver import (
        QemuGuestAgentDriver,
    )

    build = patched_build if request.param == "patched" else unpatched_build
    socket_path = short_tmp / "qga.sock"
    binary = build / "qemu-ga-patched-static"
    with (short_tmp / "agent.log").open("w") as agent_log:
        agent = subprocess.Popen(
            [str(binary), "-m", "unix-listen", "-p", str(socket_path), "-t", str(short_tmp)],
            stdout=agent_log,
            stderr=subprocess.STDOUT,
        )
        try:
            end = time.monotonic() + 20
            while not socket_path.exists():
                assert time.monotonic() < end, "the agent made no socket"
                time.sleep(0.05)
            driver = QemuGuestAgentDriver({"path": str(socket_path)}, logging.getLogger("fw"))
            yield driver
            driver.close()
        finally:
            agent.kill()
            agent.wait()


def _poll(driver, pid: int, done, deadline: float = 60.0) -> tuple[dict, int]:
    polls, end = 0, time.monotonic() + deadline
    while True:
        status = driver.exec_status(pid)
        polls += 1
        if done(status):
            return status, polls
        assert time.monotonic() < end, f"gave up after {polls} polls: {status}"


@pytest.mark.parametrize("firewheel", ["patched"], indirect=True)
def test_firewheel_driver_sees_output_while_running_without_false_truncation(
    firewheel, short_tmp: Path
) -> None:
    gate = short_tmp / "go"
    script = (
        f"seq 1 2000; touch {gate}.printed; while [ ! -e {gate} ]; do sleep 0.05; done; "
        "echo done; exit 3"
    )
    pid = firewheel.execute("/bin/sh", ["-c", script])
    status, _ = _poll(firewheel, pid, lambda s: s.get("stdout", "").endswith("2000\n"))
    assert not status.get("exited")  # it waits for the gate: the output came early
    gate.touch()
    status, _ = _poll(firewheel, pid, lambda s: s.get("exited"))
    assert status["stdout"] == "".join(f"{n}\n" for n in range(1, 2001)) + "done\n"
    assert status["exitcode"] == 3
    assert "stdout_trunc" not in status and "stderr_trunc" not in status


@pytest.mark.parametrize("firewheel", ["patched"], indirect=True)
def test_firewheel_driver_loses_nothing_over_thousands_of_polls(firewheel) -> None:
    script = "i=0; while [ $i -lt 3000 ]; do echo $i; echo e$i >&2; i=$((i+1)); sleep 0.001; done"
    pid = firewheel.execute("/bin/sh", ["-c", script])
    status, polls = _poll(firewheel, pid, lambda s: s.get("exited"), deadline=120)
    assert polls >= 1000, polls
    assert status["stdout"] == "".join(f"{n}\n" for n in range(3000))
    assert status["stderr"] == "".join(f"e{n}\n" for n in range(3000))
    assert status["exitcode"] == 0 and "stdout_trunc" not in status


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
    status, _ = _poll(firewheel, pid, lambda s: s.get("exited"))
    assert status["stdout"] == "early\nlate\n"
    assert status.get("stdout_trunc") is True  # upstream's out-truncated: false, read as cut
