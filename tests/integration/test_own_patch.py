"""The README's "Your own patch", played for real: its one-file recipe, with a patch of the user's
to QEMU 10.0's qga/main.c (made here from the pinned source: a string of `--help` changed), is
built on top of the series' set: our patch first, the user's after, the series' base, packages
and flags; the agent holds the user's change and the manifest records both sets."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tarfile
from pathlib import Path

from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.host.cache import Cache
from builder.stages.source import prepare_source
from tests.helpers import DEFAULT_RECIPE, ROOT, run_cli

README = (ROOT / "README.md").read_text()

MARK = "Usage (built with my change):"


def _readme_recipe() -> str:
    section = README.split("## Your own patch", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```yaml\n(.*?)```", section, flags=re.S)
    assert found is not None
    return found.group(1)


def _my_patch() -> bytes:
    """A unified diff of qga/main.c as the user would write it: `Usage:` in --help changed."""
    plan, _ = load_plan(DEFAULT_RECIPE, Overrides())
    source = prepare_source(plan.source, Cache.default(), lambda line: None)
    try:
        with tarfile.open(source.archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/qga/main.c"))
            handle = tar.extractfile(member)
            assert handle is not None
            original = handle.read().decode().splitlines(keepends=True)
    finally:
        source.cleanup()
    changed = [line.replace('"Usage:', f'"{MARK}', 1) for line in original]
    assert changed != original, "qga/main.c has no usage line"
    diff = difflib.unified_diff(original, changed, "a/qga/main.c", "b/qga/main.c")
    return "".join(diff).encode()


def test_the_readme_own_patch_builds_on_the_series_set(tmp_path: Path) -> None:
    project = tmp_path / "checkout"
    (project / "recipes").mkdir(parents=True)
    (project / "Dockerfile.linux").write_bytes((ROOT / "Dockerfile.linux").read_bytes())
    (project / "pyproject.toml").write_text("")
    patch = project / "patches" / "local" / "0001-my-change.patch"
    patch.parent.mkdir(parents=True)
    patch.write_bytes(_my_patch())
    digest = hashlib.sha256(patch.read_bytes()).hexdigest()
    recipe = project / "recipes" / "my-agent.yaml"
    recipe.write_text(_readme_recipe().replace("<sha256 of the file>", digest))
    out = tmp_path / "out"

    result = run_cli("run", str(recipe), "--output", str(out), "--log-format", "json")
    assert result.returncode == 0, result.stderr[-4000:]

    manifest = json.loads((out / "manifest.json").read_text())
    series = manifest["series"]
    assert series["patch_set"] == "patches/qemu-10.0/"
    assert series["own_patches"] == {"0001-my-change.patch": digest}
    applied = [p["name"] for p in manifest["patches"]]
    assert applied == [*series["patches"], "0001-my-change.patch"]  # ours first, the user's after
    assert series["suite"] == "trixie" and "trixie" in manifest["environment"]["distribution"]
    agent = (out / "qemu-ga-patched-static").read_bytes()
    assert MARK.encode() in agent  # the user's change is in the agent
