"""`vm-test --fast` given what it cannot test (a wrong port name, an agent that never answers,
no qemu-system, no agent): one clear message, its exit code, no VM left running. One VM at a
time, mostly waiting out a deadline: these run beside the session's builds (test_vm.py's two
VMs side by side run after them)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import run_cli
from tests.integration.test_vm import qemu_processes


def test_wrong_port_name(patched_build: Path) -> None:
    result = run_cli(
        "vm-test",
        "--fast",
        str(patched_build),
        "--port-name",
        "org.example.wrong",
        "--boot-deadline",
        "25",
    )
    assert result.returncode == 11
    assert "did not answer within 25 s" in result.stderr
    assert "no virtio port named org.qemu.guest_agent.0" in result.stderr  # the console tail
    assert "Traceback" not in result.stderr
    assert qemu_processes() == []


def test_an_agent_that_never_answers(tmp_path: Path) -> None:
    fake = tmp_path / "qemu-ga-patched-static"
    shutil.copy("/bin/true", fake)  # dynamic: it cannot even start in the initramfs
    result = run_cli("vm-test", "--fast", str(tmp_path), "--boot-deadline", "20")
    assert result.returncode == 11
    assert "did not answer within 20 s" in result.stderr and "agent exited" in result.stderr
    assert qemu_processes() == []


def test_no_qemu_system(patched_build: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    result = run_cli("vm-test", "--fast", str(patched_build), env={"PATH": str(bin_dir)})
    assert result.returncode == 13
    assert "qemu-system-x86_64 is not installed" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_agent(tmp_path: Path) -> None:
    result = run_cli("vm-test", "--fast", str(tmp_path))
    assert result.returncode == 11 and "no agent binary there" in result.stderr
