"""recipes/windows-msi.yaml (and 10.2's) end to end through the real Docker engine: what the
MSI holds, read with the host's msitools; wine's run in the box; bad input. The agents under
wine are in test_windows_agent.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from builder.formats.checksums import parse_sha256sums, sha256_file
from tests.helpers import RECIPES, artifact_of, leftover_containers, localize, run_cli

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


def test_outputs(windows_build: Path, engine) -> None:
    names = {p.name for p in windows_build.iterdir()}
    assert {
        "qemu-ga-x86_64.msi",
        "qemu-ga.exe",
        "SHA256SUMS",
        "manifest.json",
        "provenance.intoto.json",
        "sbom.spdx.json",
        "logs",
    } <= names
    result = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=windows_build, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
    assert leftover_containers(engine) == []


def test_the_sbom_traces_every_bundled_dll(windows_build: Path) -> None:
    """Each DLL the MSI bundles is in the SBOM: cross-built from a source Dockerfile.mingw
    pins (with its orig tarball's sha256) or a Debian package of the image; QEMU's own VSS DLL
    is the build's."""
    from tests.unit.test_sbom import validate

    validate(windows_build / "sbom.spdx.json")
    document = json.loads((windows_build / "sbom.spdx.json").read_text())
    manifest = json.loads((windows_build / "manifest.json").read_text())
    files = manifest["msi_contents"]["qemu-ga-x86_64.msi"]["files"]
    said = " ".join(p.get("comment", "") for p in document["packages"])
    for name in files:
        if name.endswith(".dll") and name != "qga-vss.dll":
            assert name in said, name
    glib = next(
        p for p in document["packages"] if p["SPDXID"].startswith("SPDXRef-CrossBuilt-glib")
    )
    assert glib["comment"].startswith("cross-built in the build image from glib2.0_")
    assert glib["checksums"][0]["algorithm"] == "SHA256"


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


@pytest.mark.full  # a whole Windows compile for one error; make test signs the Windows build
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


@pytest.mark.full
@pytest.mark.parametrize(
    "fixture,version", [("windows_102_build", "10.2.2"), ("windows_111_build", "11.1.1")]
)
def test_newer_series_for_windows(
    request: pytest.FixtureRequest, fixture: str, version: str
) -> None:
    """10.2's and 11.1's MSI hold the same files (11.x links no libatomic-1.dll, which the MSI
    does not bundle: the check stage compares the exe's imports with the bundled DLLs), and
    each qemu-ga.exe ran under wine in the box."""
    build: Path = request.getfixturevalue(fixture)
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["qemu_version"] == version
    msi = artifact_of(build, "msi").name  # the recipe puts the version in it
    assert msi == f"qemu-ga-patched-{version}+qga1-windows-x86_64.msi"
    assert set(manifest["msi_contents"][msi]["files"]) == EXPECTED_FILES
    log = next((build / "logs").glob("*-check.log")).read_text()
    assert f"wine: QEMU Guest Agent {version}" in log
