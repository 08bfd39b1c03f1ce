"""The MSI installs and uninstalls under wine, in the wine box (never on this host): the check
stage's record in the manifest, the same check on the published MSI (after the reproducibility
rewrite) with tables read by this host's msitools, and the check failing when a file installed
is not the MSI's."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from builder.boxes import msi_install
from builder.boxes.wine_box import wine_box
from builder.errors import ArtifactError
from builder.formats import msi
from builder.host.cache import Cache
from builder.log import StepOutput

MSI = "qemu-ga-x86_64.msi"
INSTALL_DIR = "C:\\Program Files\\Qemu-ga"


def host_view(path: Path, scratch: Path) -> tuple[dict[str, list[dict[str, str]]], dict[str, str]]:
    """The MSI's tables and each file's sha256, read with this host's msitools."""
    tables = {}
    for table in msi_install.TABLES:
        text = subprocess.run(
            ["msiinfo", "export", str(path), table], capture_output=True, text=True, check=True
        ).stdout
        tables[table] = msi.parse_table(text)
    subprocess.run(["msiextract", "-C", str(scratch), str(path)], check=True, capture_output=True)
    files = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in scratch.rglob("*")
        if p.is_file()
    }
    return tables, files


def test_check_stage_records_the_install(windows_build: Path) -> None:
    manifest = json.loads((windows_build / "manifest.json").read_text())
    contents = manifest["msi_contents"][MSI]
    install = contents["install_check"]
    assert install["msiexec_install_exit"] == 0 and install["msiexec_uninstall_exit"] == 0
    assert set(install["files_installed"]) == set(contents["files"])
    assert set(install["files_installed"].values()) == {INSTALL_DIR}
    service = install["services"]["QEMU-GA"]
    assert service["state"] == "RUNNING"  # the MSI's own, fatal, service start succeeded
    assert service["image_path"].endswith("qemu-ga.exe -d --retry-path")
    vss_option = "QEMU Guest Agent VSS Provider\\VssOption"
    assert any(value.endswith(vss_option) for value in install["registry_values"])
    assert install["vss_register_action_ran"] is True
    assert install["left_after_uninstall"] == {"files": 0, "registry_values": 0, "services": 0}


def test_published_msi_installs_and_uninstalls(windows_build: Path, engine, tmp_path: Path) -> None:
    tables, files = host_view(windows_build / MSI, tmp_path / "files")
    output = StepOutput("msi-install", None, None)
    with wine_box(engine, Cache.default(), output) as box:
        install = msi_install.check_install(box, windows_build / MSI, tables, files, output)
    assert set(install["files_installed"]) == set(files) and len(files) >= 10
    assert install["services"]["QEMU-GA"]["state"] == "RUNNING"
    assert len(install["registry_values"]) == len(tables["Registry"])


def test_install_check_fails_on_a_file_that_is_not_the_msis(
    windows_build: Path, engine, tmp_path: Path
) -> None:
    tables, files = host_view(windows_build / MSI, tmp_path / "files")
    files["qemu-ga.exe"] = "0" * 64  # what the check expects, and the install cannot match
    output = StepOutput("msi-install", None, None)
    with (
        pytest.raises(ArtifactError, match=r"files missing or not the MSI's: qemu-ga\.exe(;|\s|$)"),
        wine_box(engine, Cache.default(), output) as box,
    ):
        msi_install.check_install(box, windows_build / MSI, tables, files, output)
