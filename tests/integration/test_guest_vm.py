"""`vm-test` as users run the agent: the default build's .deb installed with `dpkg -i` in booted
Debian trixie guests (systemd and udev, the distribution's kernel and initramfs, made from the
debootstrapped base), the agent started by udev/systemd on its port, never by hand; upgrade,
reboot, removal and purge; a guest without the port; Debian's own agent replaced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.helpers import run_cli

VERIFIED = "systemd,no-port,replace"


def test_the_deb_runs_where_users_install_it(patched_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "linux-static"
    shutil.copytree(patched_build, out)  # vm-test records its report in the manifest
    result = run_cli("vm-test", str(out), "--scenarios", VERIFIED, timeout=1800)
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads(result.stdout)
    assert report["mode"] == "guest" and report["passed"]
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert set(scenarios) == set(VERIFIED.split(","))
    systemd = {c["name"] for c in scenarios["systemd"]["checks"] if c["passed"]}
    assert {
        "installed",
        "starts-on-install",
        "distribution-paths",
        "contract",
        "fsfreeze-hook",
        "upgrade",
        "starts-at-boot",
        "removed-and-purged",
    } <= systemd
    assert scenarios["systemd"]["boot_to_answer_seconds"] > 0
    assert [c["name"] for c in scenarios["no-port"]["checks"]] == ["no-agent-without-port"]
    assert "ours-replaces-it" in {c["name"] for c in scenarios["replace"]["checks"]}
    guest = report["guests"]["systemd"]
    assert guest["systemd"] and guest["kernel_package"] and guest["packages"]
    assert json.loads((out / "manifest.json").read_text())["vm_test"] == report


def test_an_output_without_a_deb_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "bare"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"artifacts": []}))
    result = run_cli("vm-test", str(out))
    assert result.returncode == 11, result.stderr
    assert "holds no .deb" in result.stderr and "Traceback" not in result.stderr
