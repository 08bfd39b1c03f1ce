"""The compiler cache never changes what is built: a build with the cache cold (its volume
removed), one with it warm (served from it, configure's tree included), and one with it off
give identical artifacts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from builder.boxes.build_box import ccache_volume
from tests.helpers import leftover_containers, run_cli, write_variant


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def _build_image_id(engine, recipe: Path) -> str:
    """The build image a run of `recipe` uses now, found (or made) by `prepare`, which compiles
    nothing: the session's earlier tests may have made it anew since the suite's own build."""
    result = run_cli("prepare", "--log-format", "json", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    (tag,) = [
        event["event"].removeprefix("build image ")
        for event in events
        if str(event.get("event", "")).startswith("build image ")
    ]
    image_id = engine.image_id(tag)
    assert image_id, tag
    return image_id


@pytest.mark.full  # make test's builds use the cache; this proves it changes no byte
@pytest.mark.alone  # a build beside it would hold the volume it removes and skew its counts
def test_cold_warm_and_off_give_identical_artifacts(
    tmp_path: Path, engine, patched_build: Path
) -> None:
    recipe = write_variant(tmp_path, "ccache-proof", vm_test=False)
    image_id = _build_image_id(engine, recipe)
    # Cold: the build image's compiler cache starts empty (the tool recreates it on use).
    volume = ccache_volume(image_id)
    subprocess.run(["docker", "volume", "rm", "-f", volume], check=True, capture_output=True)

    builds, trees = {}, {}
    for name in ("cold", "warm"):
        out = tmp_path / name
        result = run_cli("run", str(recipe), "--no-cache", "--output", str(out))
        assert result.returncode == 0, result.stderr[-3000:]
        assert _manifest(out)["environment"]["image"]["id"] == image_id
        builds[name] = _manifest(out)["build"]["ccache"]
        trees[name] = _manifest(out)["build"]["configured_tree"]
    assert builds["cold"]["hits"] == 0 and builds["cold"]["misses"] > 100, builds
    assert builds["warm"]["hits"] > 100 and builds["warm"]["misses"] == 0, builds
    # The warm build did not configure: it extracted the tree the cold one stored.
    assert trees["cold"]["reused"] is False and trees["warm"]["reused"] is True, trees
    assert trees["cold"]["key"] == trees["warm"]["key"]
    sums = (tmp_path / "cold" / "SHA256SUMS").read_text()
    assert (tmp_path / "warm" / "SHA256SUMS").read_text() == sums

    off = run_cli(
        "verify", str(recipe), "--no-ccache", "--against", str(tmp_path / "cold" / "SHA256SUMS"),
        "--output", str(tmp_path / "off"),
    )  # fmt: skip
    assert off.returncode == 0, off.stderr[-3000:]
    assert _manifest(tmp_path / "off" / "build")["build"]["ccache"] is None
    assert _manifest(tmp_path / "off" / "build")["build"]["configured_tree"] is None
    # The suite's own build (its cache state unknown) is the same binary too.
    agent = [line for line in sums.splitlines() if line.endswith("  qemu-ga-patched-static")]
    assert agent and agent[0] in (patched_build / "SHA256SUMS").read_text().splitlines()
    assert leftover_containers(engine) == []
