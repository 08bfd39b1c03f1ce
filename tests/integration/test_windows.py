"""recipes/windows-msi.yaml end to end through the real Docker engine, then the patched
Windows agent under wine: `-m isa-serial -p COM5`, COM5 mapped to a pty pair this test owns.

The guest command is a batch file that prints, waits for a file that the test creates only after
it saw the first output, then prints again: output must arrive while `exited` is false.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import wine
from builder.agent import AgentClient, ExecResult
from builder.checksums import parse_sha256sums
from tests.conftest import RECIPES
from tests.integration.conftest import leftover_containers, run_cli

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
WAIT_BAT = (
    "@echo off\r\necho first\r\necho err-first 1>&2\r\n:wait\r\n"
    "if exist C:\\qga\\go goto done\r\nping -n 2 127.0.0.1 >nul\r\ngoto wait\r\n"
    ":done\r\necho second\r\necho err-second 1>&2\r\nexit /b 3\r\n"
)


@pytest.fixture(scope="session")
def windows_build(builds_dir: Path, patched_build: Path) -> Path:
    # patched_build first: the Linux builds already hold the CPUs; never two builds at once.
    out = builds_dir / "windows"
    result = run_cli("run", str(WINDOWS_RECIPE), "--output", str(out), "--log-format", "json")
    assert result.returncode == 0, result.stderr[-4000:]
    return out


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
    log = next((windows_build / "logs").glob("*-verify.log")).read_text()
    manifest = json.loads((windows_build / "manifest.json").read_text())
    assert f"wine: QEMU Guest Agent {manifest['qemu_version']}" in log


@pytest.fixture(scope="module")
def wine_agent(
    windows_build: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AgentClient, Path]]:
    files = tmp_path_factory.mktemp("msi")
    subprocess.run(
        ["msiextract", "-C", str(files), str(windows_build / "qemu-ga-x86_64.msi")],
        check=True,
        capture_output=True,
    )
    exe = next(files.rglob("qemu-ga.exe"))
    with wine.prefix() as prefix:
        (prefix.drive_c / "qga").mkdir(parents=True, exist_ok=True)
        (prefix.drive_c / "qga" / "wait.bat").write_text(WAIT_BAT)
        port_master, port_slave = os.openpty()
        tty.setraw(port_slave)
        prefix.set_com_port("COM5", os.ttyname(port_slave))
        console_master, console_slave = os.openpty()
        log = tmp_path_factory.mktemp("log") / "qga.log"
        agent = subprocess.Popen(
            [prefix.wine, str(exe), "-m", "isa-serial", "-p", "COM5", "-l", str(log)],
            stdin=console_slave,
            stdout=console_slave,
            stderr=console_slave,
            env=prefix.env,
            cwd=exe.parent,
            start_new_session=True,
        )
        client = AgentClient(port_master)
        try:
            client.sync(timeout=90)
            yield client, prefix.drive_c / "qga"
        finally:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
            for fd in (port_master, port_slave, console_master, console_slave):
                os.close(fd)


def test_windows_agent_returns_output_while_running(wine_agent: tuple[AgentClient, Path]) -> None:
    client, shared = wine_agent
    pid = client.exec("C:\\windows\\system32\\cmd.exe", ["/c", "C:\\qga\\wait.bat"])
    result = ExecResult()
    end = time.monotonic() + 60
    while b"first" not in result.stdout or b"err-first" not in result.stderr:
        assert time.monotonic() < end, result
        client.poll(pid, result)
        time.sleep(0.1)
    assert not result.exited  # it waits for the gate: this output came early
    (shared / "go").write_text("go")
    end = time.monotonic() + 60
    while not result.exited:
        assert time.monotonic() < end, result
        client.poll(pid, result)
        time.sleep(0.1)
    assert result.stdout.replace(b"\r\n", b"\n").strip() == b"first\nsecond"
    assert result.stderr.replace(b"\r\n", b"\n").split() == [b"err-first", b"err-second"]
    assert result.exitcode == 3


def test_windows_agent_exit_codes(wine_agent: tuple[AgentClient, Path]) -> None:
    client, _ = wine_agent
    for code in (0, 5):
        result = client.run("C:\\windows\\system32\\cmd.exe", ["/c", f"exit /b {code}"], timeout=60)
        assert result.exitcode == code
