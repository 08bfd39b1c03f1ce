"""examples/github-actions-release.yml: a workflow that parses, builds recipes that exist (each
into the directory it uploads), and fans in with a `release` command line this CLI accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from builder.cli import build_parser, main
from tests.helpers import RECIPES, ROOT

WORKFLOW = ROOT / "examples" / "github-actions-release.yml"
RELEASE_RECIPES = {
    "linux-static-qemu-10.0",
    "linux-static-qemu-10.2",
    "linux-static-qemu-7.2",
    "linux-static-qemu-5.2",
    "windows-msi-qemu-10.2",
}


def load() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def step(job: dict[str, Any], pattern: str) -> dict[str, Any]:
    found = [s for s in job["steps"] if re.search(pattern, s.get("run", "") + s.get("uses", ""))]
    assert len(found) == 1, pattern
    return found[0]


def command_line(text: str) -> list[str]:
    """The arguments after `python -m builder` in a step's command."""
    words = shlex.split(text.replace("${{ matrix.recipe }}", "RECIPE"))
    return words[words.index("builder") + 1 :]


def test_the_workflow_runs_on_tags() -> None:
    data = load()
    triggers = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["push"]["tags"] == ["v*"]
    assert set(data["jobs"]) == {"build", "release"}


def test_the_matrix_builds_recipes_that_exist(tmp_path: Path) -> None:
    recipes = load()["jobs"]["build"]["strategy"]["matrix"]["recipe"]
    assert set(recipes) == RELEASE_RECIPES and len(recipes) == len(RELEASE_RECIPES)
    for name in recipes:
        path = RECIPES / f"{name}.yaml"
        assert yaml.safe_load(path.read_text())["name"] == name
        assert main(["validate", str(path)]) == 0


def test_each_job_uploads_what_it_built() -> None:
    build = load()["jobs"]["build"]
    step(build, r"scripts/setup\.sh")
    args = build_parser().parse_args(command_line(step(build, r"builder run")["run"]))
    assert args.command == "run" and args.recipes == [Path("recipes/RECIPE.yaml")]
    upload = step(build, r"actions/upload-artifact@v\d+$")
    assert Path(upload["with"]["path"].replace("${{ matrix.recipe }}", "RECIPE")) == args.output
    assert upload["with"]["name"] == "out-${{ matrix.recipe }}"


def test_the_fan_in_merges_every_job_and_attaches_the_release() -> None:
    release = load()["jobs"]["release"]
    assert release["needs"] == "build"
    download = step(release, r"actions/download-artifact@v\d+$")
    assert download["with"] == {"pattern": "out-*", "path": "out"}
    merge = step(release, r"builder release")["run"]
    args = build_parser().parse_args(command_line(merge))
    assert args.command == "release" and args.inputs == [Path("out/*")]  # the shell expands it
    assert step(release, r"sha256sum .*-c SHA256SUMS")
    attach = step(release, r"gh release upload")
    assert attach["if"] == "startsWith(github.ref, 'refs/tags/')"
    assert release["permissions"] == {"contents": "write"}


def test_only_standard_actions_pinned_to_a_major_version() -> None:
    jobs = load()["jobs"].values()
    used = {s["uses"] for job in jobs for s in job["steps"] if "uses" in s}
    assert {u.split("@")[0] for u in used} <= {
        "actions/checkout",
        "actions/upload-artifact",
        "actions/download-artifact",
    }
    assert all(re.fullmatch(r"[a-z-]+/[a-z-]+@v\d+", u) for u in used), used
