"""Helpers to run a built Linux agent on this host and to drive it: with our client
(`RunningAgent`), and with FIREWHEEL's own driver (`firewheel_driver` and the checks below)."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from builder.agent.client import AgentClient


class RunningAgent:
    """A built agent on a unix socket (`qemu-ga -m unix-listen`), our client connected."""

    def __init__(self, binary: Path, workdir: Path, runner: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.socket = workdir / "qga.sock"
        self.log = (workdir / "agent.log").open("w")
        self.process = subprocess.Popen(
            [
                *runner,
                str(binary),
                *("-m", "unix-listen", "-p", str(self.socket), "-t", str(workdir)),
            ],
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


@contextmanager
def firewheel_driver(binary: Path, workdir: Path, runner: Sequence[str] = ()) -> Iterator[Any]:
    """FIREWHEEL's own driver (PyPI's firewheel 3.1.0 with qemu.qmp 0.0.3) on a fresh agent;
    `runner` runs another machine's agent (qemu-aarch64, called explicitly)."""
    from firewheel.vm_resource_manager.drivers.qemu_guest_agent_driver import (
        QemuGuestAgentDriver,
    )

    socket_path = workdir / "qga.sock"
    with (workdir / "agent.log").open("w") as agent_log:
        agent = subprocess.Popen(
            [
                *runner,
                str(binary),
                *("-m", "unix-listen", "-p", str(socket_path), "-t", str(workdir)),
            ],
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


def poll(driver: Any, pid: int, done: Callable[[dict], Any], deadline: float = 60.0) -> tuple:
    """exec_status until done(status); returns the status and how many polls it took."""
    polls, end = 0, time.monotonic() + deadline
    while True:
        status = driver.exec_status(pid)
        polls += 1
        if done(status):
            return status, polls
        assert time.monotonic() < end, f"gave up after {polls} polls: {status}"


def firewheel_sees_output_while_running(
    driver: Any, workdir: PurePosixPath, touch: Callable[[PurePosixPath], None] | None = None
) -> None:
    """`workdir` is the agent's (a guest's directory, with `touch` making a file there)."""
    gate = workdir / "go"
    script = (
        f"seq 1 2000; touch {gate}.printed; while [ ! -e {gate} ]; do sleep 0.05; done; "
        "echo done; exit 3"
    )
    pid = driver.execute("/bin/sh", ["-c", script])
    status, _ = poll(driver, pid, lambda s: s.get("stdout", "").endswith("2000\n"))
    assert not status.get("exited")  # it waits for the gate: the output came early
    (touch or (lambda path: Path(path).touch()))(gate)
    status, _ = poll(driver, pid, lambda s: s.get("exited"))
    assert status["stdout"] == "".join(f"{n}\n" for n in range(1, 2001)) + "done\n"
    assert status["exitcode"] == 3
    assert "stdout_trunc" not in status and "stderr_trunc" not in status


def firewheel_loses_nothing(driver: Any, deadline: float = 120.0) -> None:
    """Thousands of polls while a command prints: the pieces make the whole, nothing flagged.
    (`deadline`: longer in an emulated guest, where each of its 3000 sleeps is a slow exec.)"""
    script = "i=0; while [ $i -lt 3000 ]; do echo $i; echo e$i >&2; i=$((i+1)); sleep 0.001; done"
    pid = driver.execute("/bin/sh", ["-c", script])
    status, polls = poll(driver, pid, lambda s: s.get("exited"), deadline=deadline)
    assert polls >= 1000, polls
    assert status["stdout"] == "".join(f"{n}\n" for n in range(3000))
    assert status["stderr"] == "".join(f"e{n}\n" for n in range(3000))
    assert status["exitcode"] == 0 and "stdout_trunc" not in status
