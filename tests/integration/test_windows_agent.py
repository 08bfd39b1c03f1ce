"""The patched Windows agents (10.0 and 10.2) under wine in the wine box (never on this host):
`-m isa-serial -p COM5`, COM5 a pty that socat ties to a stream the test holds. The guest
command is a batch file that prints, waits for a file the test creates only after it saw the
first output, then prints again: output must arrive while `exited` is false. FIREWHEEL's own
driver talks to the same agent through a unix socket bridged to COM5."""

from __future__ import annotations

import logging
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.agent.client import AgentClient, ExecResult
from builder.boxes.wine_box import DRIVE_C, WORK, WineBox, wine_box
from builder.config.layout import BUILD_UID
from builder.host.cache import Cache
from builder.log import StepOutput
from tests.agents import poll
from tests.helpers import artifact_of

CMD = "C:\\windows\\system32\\cmd.exe"


def wait_bat(gate: str) -> str:
    """Prints, then waits for C:\\qga\\go-GATE (made by the test after it saw the output)."""
    return (
        "@echo off\r\necho first\r\necho err-first 1>&2\r\n:wait\r\n"
        f"if exist C:\\qga\\go-{gate} goto done\r\nping -n 2 127.0.0.1 >nul\r\ngoto wait\r\n"
        ":done\r\necho second\r\necho err-second 1>&2\r\nexit /b 3\r\n"
    )


@dataclass
class WineAgent:
    client: AgentClient
    box: WineBox
    channel: socket.socket  # the agent's COM5, as a byte stream


# 10.2's and 11.1's agents are built in the `full` tier (make test-all) only.
BUILDS = {"10.0": "windows_build", "10.2": "windows_102_build", "11.1": "windows_111_build"}


@pytest.fixture(
    scope="module",
    params=[
        "10.0",
        pytest.param("10.2", marks=pytest.mark.full),
        pytest.param("11.1", marks=pytest.mark.full),
    ],
)
def wine_agent(
    request: pytest.FixtureRequest, engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WineAgent]:
    """The patched qemu-ga.exe from the MSI, running under wine in the wine box (never on this
    host) on `-m isa-serial -p COM5`; COM5 is a pty that socat ties to a stream we hold."""
    build = request.getfixturevalue(BUILDS[request.param])
    files = tmp_path_factory.mktemp("msi")
    subprocess.run(
        ["msiextract", "-C", str(files), str(artifact_of(build, "msi"))],
        check=True,
        capture_output=True,
    )
    exe = next(files.rglob("qemu-ga.exe"))
    output = StepOutput("wine-agent", None, None)
    with wine_box(engine, Cache.default(), output) as box:
        box.mkdir(f"{DRIVE_C}/qga")
        box.mkdir(f"{WORK}/agent")
        box.put_directory(exe.parent, f"{WORK}/agent")
        batches = {f"wait-{gate}.bat": wait_bat(gate).encode() for gate in ("ours", "fw")}
        box.container.put_files(f"{DRIVE_C}/qga", batches, uid=BUILD_UID, gid=BUILD_UID)
        channel = box.container.open_stream(
            ["socat", "STDIO,raw,echo=0", f"PTY,link={WORK}/com5,raw,echo=0"]
        )
        end = time.monotonic() + 30
        while box.run(["test", "-e", f"{WORK}/com5"])[0] != 0:
            assert time.monotonic() < end, "socat made no pty"
        port = ["reg", "add", r"HKLM\Software\Wine\Ports", "/v", "COM5", "/t", "REG_SZ"]
        code, printed = box.run(["wine", *port, "/d", f"{WORK}/com5", "/f"])
        assert code == 0, printed
        box.run(["wineserver", "-k"])  # the mount manager reads Ports when wine starts
        box.container.start(
            [
                "script",
                "-qefc",
                f"cd {WORK}/agent && exec wine qemu-ga.exe -m isa-serial -p COM5 -l {WORK}/qga.log",
                "/dev/null",
            ]
        )
        client = AgentClient(channel.fileno())
        try:
            client.sync(timeout=90)
            yield WineAgent(client, box, channel)
        finally:
            channel.close()


def test_windows_agent_returns_output_while_running(wine_agent: WineAgent) -> None:
    client, box = wine_agent.client, wine_agent.box
    pid = client.exec(CMD, ["/c", "C:\\qga\\wait-ours.bat"])
    result = ExecResult()
    end = time.monotonic() + 60
    while b"first" not in result.stdout or b"err-first" not in result.stderr:
        assert time.monotonic() < end, result
        client.poll(pid, result)
        time.sleep(0.1)
    assert not result.exited  # it waits for the gate: this output came early
    box.container.put_files(f"{DRIVE_C}/qga", {"go-ours": b"go"}, uid=BUILD_UID, gid=BUILD_UID)
    end = time.monotonic() + 60
    while not result.exited:
        assert time.monotonic() < end, result
        client.poll(pid, result)
        time.sleep(0.1)
    assert result.stdout.replace(b"\r\n", b"\n").strip() == b"first\nsecond"
    assert result.stderr.replace(b"\r\n", b"\n").split() == [b"err-first", b"err-second"]
    assert result.exitcode == 3


def test_windows_agent_exit_codes(wine_agent: WineAgent) -> None:
    for code in (0, 5):
        result = wine_agent.client.run(CMD, ["/c", f"exit /b {code}"], timeout=60)
        assert result.exitcode == code


@contextmanager
def unix_socket_bridge(channel: socket.socket, path: Path) -> Iterator[Path]:
    """A unix socket whose one client talks to the agent's COM5 stream (FIREWHEEL's driver
    connects to a path, as it does to a VM's virtio-serial chardev)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    done = threading.Event()

    def pump() -> None:
        connection, _ = server.accept()
        with connection:
            while not done.is_set():
                ready, _, _ = select.select([connection, channel], [], [], 0.2)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (channel if source is connection else connection).sendall(data)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        done.set()
        thread.join(timeout=5)
        server.close()


def test_windows_agent_serves_firewheels_driver(wine_agent: WineAgent, short_tmp: Path) -> None:
    """FIREWHEEL's own driver: output while running, the pieces make the whole over many
    polls, no false truncation, the exit code. (Runs last on the agent: it takes the stream.)"""
    from firewheel.vm_resource_manager.drivers.qemu_guest_agent_driver import (
        QemuGuestAgentDriver,
    )

    with unix_socket_bridge(wine_agent.channel, short_tmp / "qga.sock") as path:
        driver = QemuGuestAgentDriver({"path": str(path)}, logging.getLogger("fw"))
        try:
            pid = driver.execute(CMD, ["/c", "C:\\qga\\wait-fw.bat"])
            status, _ = poll(driver, pid, lambda s: "first" in s.get("stdout", ""))
            assert not status.get("exited")  # it waits for the gate: the output came early
            wine_agent.box.container.put_files(
                f"{DRIVE_C}/qga", {"go-fw": b"go"}, uid=BUILD_UID, gid=BUILD_UID
            )
            status, _ = poll(driver, pid, lambda s: s.get("exited"))
            assert status["stdout"].replace("\r\n", "\n").split() == ["first", "second"]
            assert status["exitcode"] == 3 and "stdout_trunc" not in status
            pid = driver.execute(CMD, ["/c", "for /L %i in (1,1,400) do @echo line %i"])
            status, polls = poll(driver, pid, lambda s: s.get("exited"), deadline=120)
            lines = status["stdout"].replace("\r\n", "\n").splitlines()
            assert lines == [f"line {n}" for n in range(1, 401)], polls
            assert "stdout_trunc" not in status and status["exitcode"] == 0
        finally:
            driver.close()
