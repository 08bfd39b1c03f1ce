"""`vm-test` as users run the agent: the default build's .deb installed with `dpkg -i` in booted
Debian trixie guests (systemd and udev, the distribution's kernel and initramfs, made from the
debootstrapped base), the agent started by udev/systemd on its port, never by hand; upgrade,
reboot, removal and purge; a guest without the port; Debian's own agent replaced; a sysvinit
guest; the .rpm with its scriptlets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.integration.conftest import beside_result

REBOOTED = {
    "installed",
    "starts-on-install",
    "contract",
    "starts-at-boot",
    "removed-and-purged",
}


def _vm_test(patched_build: Path, tmp_path: Path, scenarios: str | None) -> tuple[dict, Path]:
    out = tmp_path / "linux-static"
    shutil.copytree(patched_build, out)  # vm-test records its report in the manifest
    chosen = ["--scenarios", scenarios] if scenarios else []
    result = run_cli("vm-test", str(out), *chosen, timeout=1800)
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads(result.stdout)
    assert report["mode"] == "guest" and report["passed"]
    assert json.loads((out / "manifest.json").read_text())["vm_test"] == report
    return report, out


def _passed(report: dict) -> dict[str, set[str]]:
    return {s["name"]: {c["name"] for c in s["checks"] if c["passed"]} for s in report["scenarios"]}


SYSTEMD_GUEST_SCENARIOS = "systemd,no-port,replace,rpm"


def systemd_guest_run(patched_build: Path, work: Path) -> tuple[dict, Path]:
    """The vm-test the next test checks; the session runs it beside other tests (conftest)."""
    return _vm_test(patched_build, work, SYSTEMD_GUEST_SCENARIOS)


def test_the_deb_runs_where_users_install_it(patched_build: Path, tmp_path: Path) -> None:
    """Every scenario of the systemd guest (the guest kind `make test` boots; the sysvinit
    guest is the next test's, in the full tier). Its two guests at a time keep both cores busy:
    the session runs it beside the light tests, after its other work (conftest's `beside`)."""
    report, _ = beside_result("systemd-guest", lambda: systemd_guest_run(patched_build, tmp_path))
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert list(scenarios) == ["systemd", "no-port", "replace", "rpm"]  # the order asked
    passed = _passed(report)
    assert passed["systemd"] == REBOOTED | {"distribution-paths", "fsfreeze-hook", "upgrade"}
    assert passed["rpm"] == REBOOTED | {"upgrade"}
    for name in ("systemd", "rpm"):
        assert scenarios[name]["boot_to_answer_seconds"] > 0
    assert [c["name"] for c in scenarios["no-port"]["checks"]] == ["no-agent-without-port"]
    assert "ours-replaces-it" in {c["name"] for c in scenarios["replace"]["checks"]}
    guest = report["guests"]["systemd"]
    assert guest["init"] == "systemd" and guest["kernel_package"] and guest["systemd"]
    assert list(report["guests"]) == ["systemd"]


@pytest.mark.full
def test_the_deb_runs_on_a_sysvinit_guest(patched_build: Path, tmp_path: Path) -> None:
    """The other guest kind: sysvinit (no systemd), its init script and rc links."""
    report, _ = _vm_test(patched_build, tmp_path, "sysvinit")
    assert _passed(report)["sysvinit"] == REBOOTED
    assert report["scenarios"][0]["boot_to_answer_seconds"] > 0
    guest = report["guests"]["sysvinit"]
    assert guest["init"] == "sysvinit" and guest["kernel_package"] and guest["sysvinit"]


def test_an_output_without_a_deb_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "bare"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"artifacts": []}))
    result = run_cli("vm-test", str(out))
    assert result.returncode == 11, result.stderr
    assert "holds no .deb" in result.stderr and "Traceback" not in result.stderr
