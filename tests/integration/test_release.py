"""`release` on real builds (the session's: no build of its own): the Linux and Windows outputs
merged through the CLI, checked by GNU sha256sum; the patched and unpatched Linux builds, whose
packages share file names with different bytes, refused as a conflict. (The example workflow's
whole release matrix: test_example_release.py.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from builder.formats.checksums import parse_sha256sums
from tests.helpers import artifact_of, run_cli


def test_real_outputs_merge_into_a_release(
    linux_builds: dict[str, Path], windows_build: Path, tmp_path: Path
) -> None:
    patched_build, unpatched_build = linux_builds["patched"], linux_builds["unpatched"]
    # The unpatched twin (the 10.0 release recipe without the patch) makes packages of the
    # default's names and version, around another agent: same names, other bytes.
    conflict = run_cli(
        "release", str(patched_build), str(unpatched_build), "--output", str(tmp_path / "r")
    )
    assert conflict.returncode == 3, conflict.stderr
    packages = [artifact_of(unpatched_build, kind).name for kind in ("deb", "rpm", "tarball")]
    assert any(
        f"{patched_build} and {unpatched_build} both hold {name} with different content"
        in conflict.stderr
        for name in packages
    ), conflict.stderr
    assert "Traceback" not in conflict.stderr and list(tmp_path.iterdir()) == []

    target = tmp_path / "release"
    result = run_cli(
        "release", str(patched_build), str(windows_build), "--output", str(target), timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    checked = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"],
        cwd=target,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    sums = parse_sha256sums((target / "SHA256SUMS").read_text())
    for build in (patched_build, windows_build):
        manifest = json.loads((build / "manifest.json").read_text())
        name = manifest["recipe"]["name"]
        for artifact, digest in parse_sha256sums((build / "SHA256SUMS").read_text()).items():
            assert sums[artifact] == digest
            assert (target / artifact).read_bytes() == (build / artifact).read_bytes()
        assert (target / "manifests" / f"{name}.json").read_bytes() == (
            build / "manifest.json"
        ).read_bytes()
    record = json.loads((target / "release.json").read_text())
    assert [r["name"] for r in record["recipes"]] == sorted(
        json.loads((b / "manifest.json").read_text())["recipe"]["name"]
        for b in (patched_build, windows_build)
    )
    statements = (target / "provenance.intoto.jsonl").read_text().splitlines()
    assert len(statements) == 2
    assert run_cli("verify", str(target)).returncode == 0
