"""The compiler cache never changes what is built: `verify` with a cold cache (build a fills
the volume, build b at another root, umask and hostname is served from it) gives identical
artifacts, and a build with the cache off gives the same again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from builder.pipeline import ccache_volume
from tests.helpers import leftover_containers, run_cli, write_variant


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def test_cold_warm_and_off_give_identical_artifacts(
    tmp_path: Path, engine, patched_build: Path
) -> None:
    image_id = _manifest(patched_build)["environment"]["image"]["id"]
    volume = ccache_volume(image_id)
    # Cold: the build image's compiler cache starts empty (the tool recreates it on use).
    subprocess.run(["docker", "volume", "rm", "-f", volume], check=True, capture_output=True)
    recipe = write_variant(tmp_path, "ccache-proof", vm_test=False)

    on = run_cli("verify", str(recipe), "--output", str(tmp_path / "on"))
    assert on.returncode == 0, on.stderr[-3000:]
    cold = _manifest(tmp_path / "on" / "a")["build"]["ccache"]
    warm = _manifest(tmp_path / "on" / "b")["build"]["ccache"]
    assert _manifest(tmp_path / "on" / "a")["environment"]["image"]["id"] == image_id
    assert cold["hits"] == 0 and cold["misses"] > 100, cold
    assert warm["hits"] > 100 and warm["misses"] < warm["hits"] // 10, warm

    off = run_cli(
        "verify",
        str(recipe),
        "--no-ccache",
        "--against",
        str(tmp_path / "on" / "a" / "SHA256SUMS"),
        "--output",
        str(tmp_path / "off"),
    )
    assert off.returncode == 0, off.stderr[-3000:]
    assert _manifest(tmp_path / "off" / "build")["build"]["ccache"] is None
    assert leftover_containers(engine) == []
