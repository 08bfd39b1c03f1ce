"""The artifact cache on real builds: rerunning the default recipe after the suite's build of it
is served from the cache (no build stage runs, the same bytes are published); a cache entry
whose binary was changed is never served: the run builds again and says why."""

from __future__ import annotations

import json
from pathlib import Path

from builder.config.settings import current
from tests.helpers import DEFAULT_RECIPE, leftover_containers, run_cli, write_variant


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def test_an_unchanged_rerun_is_served_from_the_cache(
    patched_build: Path, tmp_path: Path, engine
) -> None:
    out = tmp_path / "again"
    result = run_cli("run", str(DEFAULT_RECIPE), "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "artifact cache hit" in result.stderr
    assert "] compile" not in result.stderr and "] vm-test" not in result.stderr
    assert (out / "SHA256SUMS").read_bytes() == (patched_build / "SHA256SUMS").read_bytes()
    for line in (out / "SHA256SUMS").read_text().splitlines():
        name = line.split()[1]
        assert (out / name).read_bytes() == (patched_build / name).read_bytes()
    built, served = _manifest(patched_build), _manifest(out)
    assert served["cache"]["hit"] is True
    assert served["cache"]["key"] == built["cache"]["key"]
    assert "compile" not in served["timings_seconds"]
    assert served["vm_test"] == built["vm_test"]  # the stored run's VM test, as it was
    assert leftover_containers(engine) == []


def test_a_changed_cache_entry_is_rebuilt_not_served(
    patched_build: Path, tmp_path: Path, engine
) -> None:
    """A recipe of its own (no guest to boot: the cache is the point), run once to fill its
    entry; a byte of the entry changed; the next run rebuilds the same bytes."""
    recipe = write_variant(tmp_path, "cache-changed", vm_test=False)
    first = run_cli("run", str(recipe), "--output", str(tmp_path / "first"))
    assert first.returncode == 0, first.stderr[-3000:]
    key = _manifest(tmp_path / "first")["cache"]["key"]
    entry = current().cache_root / "artifacts" / key
    binary = entry / "qemu-ga-patched-static"
    binary.write_bytes(binary.read_bytes()[:-16] + b"\0" * 16)  # a changed byte, same size
    out = tmp_path / "rebuilt"
    result = run_cli("run", str(recipe), "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"cache entry {key[:12]} was changed" in result.stderr
    assert "] compile" in result.stderr  # built again
    manifest = _manifest(out)
    assert manifest["cache"]["hit"] is False and "was changed" in manifest["cache"]["reason"]
    assert (out / "qemu-ga-patched-static").read_bytes() == (
        patched_build / "qemu-ga-patched-static"
    ).read_bytes()
    assert leftover_containers(engine) == []
