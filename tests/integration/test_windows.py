"""recipes/windows-msi.yaml end to end through the real Docker engine, then the patched
Windows agent under wine: `-m isa-serial -p COM5`, COM5 mapped to a pty pair this test owns.

The guest command is a batch file that prints, waits for a file that the test creates only after
it saw the first output, then prints again: output must arrive while `exited` is false.
"""

from __future__ import annotations

import json
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
import yaml

from builder.agent.client import AgentClient, ExecResult
from builder.config.layout import BUILD_UID
from builder.formats.checksums import parse_sha256sums, sha256_file
from builder.host.cache import Cache
from builder.log import StepOutput
from builder.stages.wine_box import DRIVE_C, WORK, WineBox, wine_box
from tests.agents import poll
from tests.helpers import RECIPES, leftover_containers, localize, run_cli

WINDOWS_RECIPE = RECIPES / "windows-msi.yaml"
EXPECTED_FILES = {
    "qemu-ga.exe",
    "qga-vss.dll",
    "qga-vss.tlb",
    "gspawn-win64-helper.exe",
    "gspawn-win64-helper-console.exe",
    "iconv.dll",
    "libgcc_s_seh-1.dll",
    "libglib-2.0-0.dll",
    "libintl-8.dll",
    "libpcre2-8-0.dll",
    "libstdc++-6.dll",
    "libwinpthread-1.dll",
}
CMD = "C:\\windows\\system32\\cmd.exe"


def wait_bat(gate: str) -> str:
    """Prints, then waits for C:\\qga\\go-GATE (made by the test after it saw the output)."""
    return (
        "@echo off\r\necho first\r\necho err-first 1>&2\r\n:wait\r\n"
        f"if exist C:\\qga\\go-{gate} goto done\r\nping -n 2 127.0.0.1 >nul\r\ngoto wait\r\n"
        ":done\r\necho second\r\necho err-second 1>&2\r\nexit /b 3\r\n"
    )


def test_outputs(windows_build: Path, engine) -> None:
    names = {p.name for p in windows_build.iterdir()}
    assert {
        "qemu-ga-x86_64.msi",
        "qemu-ga.exe",
        "SHA256SUMS",
        "manifest.json",
        "provenance.intoto.json",
        "logs",
    } <= names
    result = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=windows_build, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
    assert leftover_containers(engine) == []


def test_msi_is_stripped_and_complete(windows_build: Path) -> None:
    size = (windows_build / "qemu-ga-x86_64.msi").stat().st_size
    assert 1_500_000 < size < 3_500_000, size  # unstripped it is about 12.7 MB
    manifest = json.loads((windows_build / "manifest.json").read_text())
    contents = manifest["msi_contents"]["qemu-ga-x86_64.msi"]
    assert set(contents["files"]) >= EXPECTED_FILES
    assert contents["service"] == "QEMU-GA"
    # The exe in the output is the one in the MSI.
    sums = parse_sha256sums((windows_build / "SHA256SUMS").read_text())
    assert contents["files"]["qemu-ga.exe"] == sums["qemu-ga.exe"]


def test_msi_tables_read_with_the_hosts_msitools(windows_build: Path) -> None:
    msi = windows_build / "qemu-ga-x86_64.msi"

    def export(table: str) -> str:
        return subprocess.run(
            ["msiinfo", "export", str(msi), table], capture_output=True, text=True, check=True
        ).stdout

    assert "QEMU-GA" in export("ServiceInstall")
    assert "DLLCOMRegister" in export("CustomAction")
    assert "qemu-ga.exe" in export("File")
    assert "{EB6B8302-C06E-4BEC-ADAC-932C68A3A98D}" in export("Property")  # QEMU's UpgradeCode


def test_version_ran_under_wine(windows_build: Path) -> None:
    log = next((windows_build / "logs").glob("*-check.log")).read_text()
    manifest = json.loads((windows_build / "manifest.json").read_text())
    assert f"wine: QEMU Guest Agent {manifest['qemu_version']}" in log


@dataclass
class WineAgent:
    client: AgentClient
    box: WineBox
    channel: socket.socket  # the agent's COM5, as a byte stream


@pytest.fixture(scope="module", params=["10.0", "10.2"])
def wine_agent(
    request: pytest.FixtureRequest, engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WineAgent]:
    """The patched qemu-ga.exe from the MSI, running under wine in the wine box (never on this
    host) on `-m isa-serial -p COM5`; COM5 is a pty that socat ties to a stream we hold."""
    build = request.getfixturevalue(
        "windows_build" if request.param == "10.0" else "windows_102_build"
    )
    files = tmp_path_factory.mktemp("msi")
    subprocess.run(
        ["msiextract", "-C", str(files), str(build / "qemu-ga-x86_64.msi")],
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


def test_sysroot_tarball_with_a_wrong_sha256(tmp_path: Path, engine) -> None:
    data = yaml.safe_load(WINDOWS_RECIPE.read_text())
    data = localize(data, tmp_path)
    data["name"] = "windows-bad-sysroot"
    data["environment"]["build_args"] = {"GLIB_SHA256": "0" * 64}
    recipe = tmp_path / "windows-bad-sysroot.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "out"
    result = run_cli("run", str(recipe), "--output", str(out))
    assert result.returncode == 6, result.stderr[-3000:]
    assert "building image" in result.stderr and "Dockerfile.mingw" in result.stderr
    assert "glib2.0_2.84.4.orig.tar.xz: FAILED" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and leftover_containers(engine) == []


def test_wxs_naming_a_dll_the_sysroot_lacks(tmp_path: Path, engine, windows_build: Path) -> None:
    patch = tmp_path / "0003-ship-a-dll-that-is-not-there.patch"
    patch.write_text(
        "--- a/qga/installer/qemu-ga.wxs\n+++ b/qga/installer/qemu-ga.wxs\n"
        "@@ -96,6 +96,9 @@\n"
        '           <Component Id="libintl" Guid="{A641BC2D-A907-4A94-9149-F30ED430878F}">\n'
        '             <File Id="libintl_8.dll" Name="libintl-8.dll" '
        'Source="$(var.BIN_DIR)/libintl-8.dll" KeyPath="yes" DiskId="1"/>\n'
        "           </Component>\n"
        '+          <Component Id="libmissing" Guid="{0D1C2B3A-4F5E-4D6C-8B7A-9E8F7A6B5C4D}">\n'
        '+            <File Id="libmissing_1.dll" Name="libmissing-1.dll" '
        'Source="$(var.BIN_DIR)/libmissing-1.dll" KeyPath="yes" DiskId="1"/>\n'
        "+          </Component>\n"
        '           <Component Id="libwinpthread" Guid="{6C117C78-0F47-4B07-8F34-6BEE11643829}">\n'
        '             <File Id="libwinpthread_1.dll" Name="libwinpthread-1.dll" '
        'Source="$(var.BIN_DIR)/libwinpthread-1.dll" KeyPath="yes" DiskId="1"/>\n'
        "           </Component>\n"
    )
    data = localize(yaml.safe_load(WINDOWS_RECIPE.read_text()), tmp_path)
    data["name"] = "windows-missing-dll"
    data["patches"].append({"path": str(patch), "sha256": sha256_file(patch)})
    recipe = tmp_path / "windows-missing-dll.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "out"
    result = run_cli("run", str(recipe), "--output", str(out))
    assert result.returncode == 7, result.stderr[-3000:]
    assert "step compile failed" in result.stderr
    assert "libmissing-1.dll" in result.stderr  # wixl's complaint, in the printed tail
    assert "Traceback" not in result.stderr
    assert not out.exists() and leftover_containers(engine) == []


def test_qemu_10_2_for_windows(windows_102_build: Path) -> None:
    """10.2's MSI holds the same files, and its qemu-ga.exe ran under wine in the box."""
    manifest = json.loads((windows_102_build / "manifest.json").read_text())
    assert manifest["qemu_version"] == "10.2.2"
    assert set(manifest["msi_contents"]["qemu-ga-x86_64.msi"]["files"]) == EXPECTED_FILES
    log = next((windows_102_build / "logs").glob("*-check.log")).read_text()
    assert "wine: QEMU Guest Agent 10.2.2" in log
