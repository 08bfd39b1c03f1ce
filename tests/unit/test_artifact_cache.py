"""The artifact cache through the orchestrator, with the fake engine of test_pipeline: a rerun
with unchanged inputs starts no container and publishes the same files; a changed input, a
modified or deleted entry file, or `--no-cache` builds again, and the log says why."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from builder import pipeline
from builder.engine import ImageRecord
from builder.outputs import output_dir
from builder.stages import artifact_cache, toolchain
from tests.fakes import OWNERS, FakeEngine
from tests.unit import test_pipeline

setup = test_pipeline.setup  # the same fixture: a recipe with a local source, a fake engine


def _files(directory: Path) -> dict[str, bytes]:
    names = json.loads((directory / "manifest.json").read_text())["artifacts"]
    return {a["name"]: (directory / a["name"]).read_bytes() for a in names} | {
        "SHA256SUMS": (directory / "SHA256SUMS").read_bytes()
    }


def _again(plan, text, cache, **kwargs):
    engine = FakeEngine()
    engine.run_id = "fakerun00002"
    return engine, pipeline.run(plan, engine, cache, text, **kwargs)


def _entries(cache) -> list[Path]:
    return [p for p in (cache.root / "artifacts").iterdir() if p.is_dir() and "." not in p.name]


def test_an_unchanged_rerun_is_served_from_the_cache_without_a_container(setup) -> None:
    plan, text, engine, cache = setup
    first = pipeline.run(plan, engine, cache, text)
    built = _files(first.output_dir)
    assert first.manifest["cache"]["hit"] is False
    assert first.manifest["cache"]["reason"] == "no earlier run of this recipe is cached"

    again, second = _again(plan, text, cache)
    assert again.created == []  # no container, no command run
    assert not [e for e in again.events if e[0] == "run"]
    assert _files(second.output_dir) == built
    record = second.manifest["cache"]
    assert record["hit"] is True and record["from_run"] == "fakerun00001"
    assert record["key"] == first.manifest["cache"]["key"]
    assert output_dir.why_not_ours(second.output_dir) is None
    assert "toolchain" not in second.manifest["timings_seconds"]


def test_no_cache_builds_even_when_an_entry_exists(setup) -> None:
    plan, text, engine, cache = setup
    pipeline.run(plan, engine, cache, text)
    again, result = _again(plan, text, cache, use_cache=False)
    assert len(again.created) == 1
    assert result.manifest["cache"] == {
        "hit": False,
        "key": result.manifest["cache"]["key"],
        "reason": "--no-cache",
    }


@pytest.mark.parametrize("damage", ["modified", "deleted", "added"])
def test_a_damaged_entry_is_never_served_and_is_rebuilt(setup, damage, caplog) -> None:
    plan, text, engine, cache = setup
    pipeline.run(plan, engine, cache, text)
    (entry,) = _entries(cache)
    agent = entry / "qemu-ga-patched-static"
    if damage == "modified":
        agent.write_bytes(agent.read_bytes() + b"evil")
    elif damage == "deleted":
        agent.unlink()
    else:
        (entry / "libevil.so").write_bytes(b"x")
    again, result = _again(plan, text, cache)
    assert len(again.created) == 1  # built again
    reason = result.manifest["cache"]["reason"]
    assert reason.startswith(f"cache entry {entry.name[:12]} was changed")
    assert result.manifest["cache"]["hit"] is False
    # The rebuilt result replaced the damaged entry; a third run is served from it.
    third, served = _again(plan, text, cache)
    assert third.created == [] and served.manifest["cache"]["hit"] is True
    assert b"evil" not in (served.output_dir / "qemu-ga-patched-static").read_bytes()


def test_a_changed_input_misses_and_names_what_changed(setup) -> None:
    plan, text, engine, cache = setup
    pipeline.run(plan, engine, cache, text)
    again = FakeEngine()
    again.run_id = "fakerun00002"
    real_build = again.build_image

    def other_image(*args, **kwargs):  # the same Dockerfile built into another image
        real_build(*args, **kwargs)
        tag = args[1]
        again.images[tag] = ImageRecord(id="sha256:" + "d" * 64, labels=kwargs["labels"])
        return again.images[tag].id

    again.build_image = other_image  # type: ignore[method-assign]
    result = pipeline.run(plan, again, cache, text)
    assert len(again.created) == 1
    assert result.manifest["cache"]["reason"] == (
        "changed since the last cached run: build_image (cccccccccccc -> dddddddddddd)"
    )


def test_a_changed_flag_misses_with_the_plan_or_configure_named(setup) -> None:
    plan, text, engine, cache = setup
    pipeline.run(plan, engine, cache, text)
    changed = replace(plan, configure_flags=(*plan.configure_flags, "--enable-debug"))
    _, result = _again(changed, text, cache)
    assert "configure" in result.manifest["cache"]["reason"]


def test_entries_are_pruned_to_the_newest_few_per_recipe(setup) -> None:
    plan, text, _, cache = setup
    for n in range(artifact_cache.KEPT_PER_RECIPE + 2):
        changed = replace(plan, configure_flags=(*plan.configure_flags, f"--flag{n}"))
        _again(changed, text, cache)
    assert len(_entries(cache)) == artifact_cache.KEPT_PER_RECIPE


def test_locked_is_checked_on_a_hit_against_the_stored_runs_packages(setup, tmp_path) -> None:
    plan, text, engine, cache = setup
    pipeline.run(plan, engine, cache, text)
    lock = tmp_path / "fake.lock"
    lock.write_text(toolchain.format_lock({"gcc": "0:0.1-1 amd64"}))
    locked = replace(plan, locked=True, lock_path=lock)
    with pytest.raises(toolchain.LockMismatch, match="gcc"):
        _again(locked, text, cache)
    image = {name: f"{version} amd64" for name, (version, _) in OWNERS.items()}
    lock.write_text(toolchain.format_lock({"gcc": "14.2.0-19 amd64", **image}))
    again, result = _again(locked, text, cache)
    assert again.created == [] and result.manifest["cache"]["hit"] is True


def test_an_entry_from_before_target_and_architecture_gets_them_when_served(setup) -> None:
    """Entries stored before the manifest said what it was built for: same plan, same target."""
    plan, text, engine, cache = setup
    pipeline.run(plan, engine, cache, text)
    (entry,) = _entries(cache)
    stored = json.loads((entry / "manifest.json").read_text())
    del stored["target"], stored["architecture"]
    (entry / "manifest.json").write_text(json.dumps(stored, indent=2) + "\n")
    again, served = _again(plan, text, cache)
    assert again.created == [] and served.manifest["cache"]["hit"] is True
    assert (served.manifest["target"], served.manifest["architecture"]) == ("linux", "x86_64")
