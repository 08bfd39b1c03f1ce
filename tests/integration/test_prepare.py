"""`prepare` against the real engine: after a run of a recipe, it finds the very images and
guest the run used (same tags, same guest disk), makes nothing again, and leaves no container.
(Cold, the session's own background `prepare` makes them beside the first builds: conftest.)"""

from __future__ import annotations

import json
from pathlib import Path

from builder.engine import Engine
from tests.helpers import DEFAULT_RECIPE, leftover_containers, run_cli


def test_prepare_after_a_run_finds_what_the_run_used(patched_build: Path, engine: Engine) -> None:
    result = run_cli("prepare", str(DEFAULT_RECIPE))  # console: each step's lines too
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((patched_build / "manifest.json").read_text())
    said = result.stderr
    assert f"reusing {manifest['environment']['image']['tag']}" in said, said[-3000:]
    guest = manifest["vm_test"]["guests"]["systemd"]["image_id"].removeprefix("sha256:")[:24]
    assert "reusing the systemd guest disk" in said and guest in said, said[-3000:]
    assert "building " not in said and "debootstrap" not in said, said[-3000:]
    assert " prepared " in said.rstrip().splitlines()[-1], said[-500:]
    assert leftover_containers(engine) == []
