"""The built Linux agent where it lives, over virtio-serial under TCG.

The patched build ran its VM test inside the pipeline: its .deb in a booted Debian guest
(recorded in its manifest; `test_guest_vm.py` runs every scenario of `vm-test`). Here the fast
mode (`vm-test --fast`: the bare agent in a busybox initramfs): the patched and the unpatched
agents boot side by side (two VMs at once) and the report shows the difference. Bad input:
test_vm_errors.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.agent import contract
from tests.helpers import ROOT


def qemu_processes() -> list[str]:
    result = subprocess.run(["pgrep", "-af", "qemu-system-x86_64"], capture_output=True, text=True)
    return [line for line in result.stdout.splitlines() if "qgavm-" in line]


def test_the_pipeline_recorded_the_vm_test(patched_build: Path) -> None:
    report = json.loads((patched_build / "manifest.json").read_text())["vm_test"]
    assert report["passed"] is True and report["mode"] == "guest"
    assert report["scenarios_passed"] == ["systemd"]
    (systemd,) = report["scenarios"]
    checks = [c["name"] for c in systemd["checks"] if c["passed"]]
    assert checks == [
        "installed",
        "starts-on-install",
        "distribution-paths",
        "contract",
        "fsfreeze-hook",
        "removed-and-purged",
    ]
    contract_detail = next(c["detail"] for c in systemd["checks"] if c["name"] == "contract")
    for scenario in contract.SCENARIOS[1:]:  # the first, guest_info, is the version's line
        assert f"{scenario.__name__}: " in contract_detail
    assert report["guests"]["systemd"]["kernel_package"]


@pytest.fixture(scope="module")
def side_by_side(patched_build: Path, unpatched_build: Path, tmp_path_factory) -> dict[str, dict]:
    """vm-test on both agents at the same time."""
    work = tmp_path_factory.mktemp("vm")
    processes = {}
    for name, build in (("patched", patched_build), ("unpatched", unpatched_build)):
        copy = work / name
        shutil.copytree(build, copy)
        processes[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "builder",
                "vm-test",
                "--fast",
                str(copy),
                "--log-format",
                "json",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=600)
        results[name] = {
            "code": process.returncode,
            "report": json.loads(out),
            "stderr": err,
            "manifest": json.loads((work / name / "manifest.json").read_text()),
        }
    return results


def test_patched_agent_passes_in_the_vm(side_by_side: dict[str, dict]) -> None:
    patched = side_by_side["patched"]
    assert patched["code"] == 0, patched["stderr"][-3000:]
    assert patched["report"]["passed"] and patched["report"]["scenarios_failed"] == []
    assert patched["manifest"]["vm_test"]["passed"] is True


def test_unpatched_agent_shows_the_difference(side_by_side: dict[str, dict]) -> None:
    unpatched = side_by_side["unpatched"]
    assert unpatched["code"] == 11
    report = unpatched["report"]
    assert "partial_output" in report["scenarios_failed"]
    assert "chunks_concatenate" in report["scenarios_failed"]
    # Everything that does not depend on the patch still works.
    assert {"guest_info", "exit_codes", "signal_reported"} <= set(report["scenarios_passed"])
    assert "failed in the VM: " in unpatched["stderr"] and "Traceback" not in unpatched["stderr"]
    assert unpatched["manifest"]["vm_test"]["passed"] is False


def test_no_vm_left_running(side_by_side: dict[str, dict]) -> None:
    assert qemu_processes() == []
