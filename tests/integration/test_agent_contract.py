"""The built agent behaves as patched: run it on this host on a unix socket and drive it over
QMP as FIREWHEEL's driver does. The unpatched build (same recipe, no patch) shows the difference.

Partial output is proven with a handshake, not sleeps: the guest command prints, then waits for
a file that the test creates only after it has seen the first output.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.agent import AgentClient, ExecResult

DEADLINE = 30.0
SIXTEEN_MIB = 16 * 1024 * 1024


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


def handshake_command(gate: Path) -> list[str]:
    script = (
        f"echo first; echo err-first >&2; touch {gate}.printed; "
        f"while [ ! -e {gate} ]; do sleep 0.05; done; "
        "echo second; echo err-second >&2; exit 7"
    )
    return ["-c", script]


def poll_until(client: AgentClient, pid: int, result: ExecResult, done, deadline: float) -> None:
    end = time.monotonic() + deadline
    while not done(result):
        assert time.monotonic() < end, f"gave up waiting; got {result}"
        client.poll(pid, result)
        time.sleep(0.05)


def test_output_arrives_while_the_process_runs(patched_agent: RunningAgent) -> None:
    client, gate = patched_agent.client, patched_agent.workdir / "go"
    pid = client.exec("/bin/sh", handshake_command(gate))
    result = ExecResult()
    poll_until(
        client,
        pid,
        result,
        lambda r: r.stdout == b"first\n" and r.stderr == b"err-first\n",
        DEADLINE,
    )
    assert not result.exited  # the command is still waiting for the gate
    gate.touch()
    poll_until(client, pid, result, lambda r: r.exited, DEADLINE)
    assert result.stdout == b"first\nsecond\n"  # chunks never repeat, and nothing is lost
    assert result.stderr == b"err-first\nerr-second\n"
    assert result.exitcode == 7 and result.signal is None


def test_chunks_concatenate_to_the_whole_output(patched_agent: RunningAgent) -> None:
    client, gate = patched_agent.client, patched_agent.workdir / "go"
    # Print in bursts, each released by the test, so the output spans many replies.
    script = (
        f"i=0; while [ $i -lt 20 ]; do seq $((i*500)) $((i*500+499)); "
        f"while [ ! -e {gate}.$i ]; do sleep 0.02; done; i=$((i+1)); done"
    )
    pid = client.exec("/bin/sh", ["-c", script])
    result = ExecResult()
    data_replies = 0
    for burst in range(20):
        expected_lines = (burst + 1) * 500
        end = time.monotonic() + DEADLINE
        while result.stdout.count(b"\n") < expected_lines:
            assert time.monotonic() < end
            status = client.poll(pid, result)
            data_replies += "out-data" in status
            time.sleep(0.02)
        assert not result.exited
        Path(f"{gate}.{burst}").touch()
    poll_until(client, pid, result, lambda r: r.exited, DEADLINE)
    expected = "".join(f"{n}\n" for n in range(10000)).encode()
    assert result.stdout == expected
    assert data_replies >= 20
    assert result.exitcode == 0


def test_signal_is_reported(patched_agent: RunningAgent) -> None:
    result = patched_agent.client.run(
        "/bin/sh", ["-c", "echo bye; kill -TERM $$"], timeout=DEADLINE
    )
    assert result.signal == 15 and result.exitcode is None
    assert result.stdout == b"bye\n"


def test_exit_codes(patched_agent: RunningAgent) -> None:
    for code in (0, 1, 42):
        result = patched_agent.client.run("/bin/sh", ["-c", f"exit {code}"], timeout=DEADLINE)
        assert result.exitcode == code


def test_more_than_16_mib_sets_truncated_and_the_agent_keeps_answering(
    patched_agent: RunningAgent,
) -> None:
    client, gate = patched_agent.client, patched_agent.workdir / "go"
    # 20 MiB are printed before the first poll, so the buffer must hit the cap.
    pid = client.exec(
        "/bin/sh",
        [
            "-c",
            f"head -c 20971520 /dev/zero; touch {gate}.done; "
            f"while [ ! -e {gate} ]; do sleep 0.05; done",
        ],
    )
    end = time.monotonic() + DEADLINE
    while not Path(f"{gate}.done").exists():
        assert time.monotonic() < end
        time.sleep(0.05)
    result = ExecResult()
    client.poll(pid, result)
    assert result.out_truncated
    assert len(result.stdout) == SIXTEEN_MIB
    assert client.execute("guest-info", timeout=10)["version"]  # not hung
    gate.touch()
    poll_until(client, pid, result, lambda r: r.exited, DEADLINE)
    assert result.exitcode == 0
    assert client.sync(timeout=10)


def test_guest_info_names_the_commands(patched_agent: RunningAgent) -> None:
    info = patched_agent.client.execute("guest-info")
    names = {command["name"] for command in info["supported_commands"]}
    assert {"guest-exec", "guest-exec-status", "guest-sync-delimited"} <= names


def test_unpatched_agent_holds_output_until_exit(unpatched_agent: RunningAgent) -> None:
    client, gate = unpatched_agent.client, unpatched_agent.workdir / "go"
    pid = client.exec("/bin/sh", handshake_command(gate))
    result = ExecResult()
    marker = Path(f"{gate}.printed")  # the command has printed its first lines
    end = time.monotonic() + DEADLINE
    while result.polls < 20 or not marker.exists():
        assert time.monotonic() < end
        client.poll(pid, result)
        time.sleep(0.05)
    assert not result.exited
    assert result.stdout == b"" and result.stderr == b""  # nothing early: the upstream behaviour
    gate.touch()
    poll_until(client, pid, result, lambda r: r.exited, DEADLINE)
    assert result.stdout == b"first\nsecond\n"
    assert result.stderr == b"err-first\nerr-second\n"
    assert result.exitcode == 7
