"""`vm-test` as users run the agent: the default build's .deb installed with `dpkg -i` in booted
Debian trixie guests (systemd and udev, the distribution's kernel and initramfs, made from the
debootstrapped base), the agent started by udev/systemd on its port, never by hand; upgrade,
reboot, removal and purge; a guest without the port; Debian's own agent replaced; a sysvinit
guest; the .rpm with its scriptlets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.helpers import run_cli

REBOOTED = {
    "installed",
    "starts-on-install",
    "contract",
    "starts-at-boot",
    "removed-and-purged",
}


def test_the_deb_runs_where_users_install_it(patched_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "linux-static"
    shutil.copytree(patched_build, out)  # vm-test records its report in the manifest
    result = run_cli("vm-test", str(out), timeout=1800)  # every scenario
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads(result.stdout)
    assert report["mode"] == "guest" and report["passed"]
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert list(scenarios) == ["systemd", "no-port", "replace", "sysvinit", "rpm"]
    passed = {
        name: {c["name"] for c in s["checks"] if c["passed"]} for name, s in scenarios.items()
    }
    assert passed["systemd"] == REBOOTED | {"distribution-paths", "fsfreeze-hook", "upgrade"}
    assert passed["rpm"] == REBOOTED | {"upgrade"}
    assert passed["sysvinit"] == REBOOTED
    for name in ("systemd", "sysvinit", "rpm"):
        assert scenarios[name]["boot_to_answer_seconds"] > 0
    assert [c["name"] for c in scenarios["no-port"]["checks"]] == ["no-agent-without-port"]
    assert "ours-replaces-it" in {c["name"] for c in scenarios["replace"]["checks"]}
    for init in ("systemd", "sysvinit"):
        guest = report["guests"][init]
        assert guest["init"] == init and guest["kernel_package"] and guest["packages"]
    assert report["guests"]["sysvinit"]["sysvinit"] and report["guests"]["systemd"]["systemd"]
    assert json.loads((out / "manifest.json").read_text())["vm_test"] == report


def test_an_output_without_a_deb_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "bare"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"artifacts": []}))
    result = run_cli("vm-test", str(out))
    assert result.returncode == 11, result.stderr
    assert "holds no .deb" in result.stderr and "Traceback" not in result.stderr
