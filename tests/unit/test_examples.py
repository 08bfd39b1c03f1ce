"""examples/github-actions-release.yml: a workflow that parses, builds recipes that exist (each
into the directory it uploads), and fans in with a `release` command line this CLI accepts."""

from __future__ import annotations

import base64
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml

from builder.cli import build_parser, main
from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.config.plan import resolve_artifacts
from builder.stages.package import package_spec
from tests.helpers import RECIPES, ROOT

WORKFLOW = ROOT / "examples" / "github-actions-release.yml"
RELEASE_RECIPES = {
    "linux-static-arm64",
    "linux-static-qemu-11.1",
    "linux-static-qemu-11.0",
    "linux-static-qemu-10.0",
    "linux-static-qemu-10.2",
    "linux-static-qemu-7.2",
    "linux-static-qemu-5.2",
    "windows-msi-qemu-10.2",
    "windows-msi-qemu-11.1",
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
    command = step(build, r"builder run")["run"].replace("$AUTHENTICODE_ARGS", "")  # Linux jobs
    args = build_parser().parse_args(command_line(command))
    assert args.command == "run" and args.recipes == [Path("recipes/RECIPE.yaml")]
    assert args.authenticode_pfx is None
    upload = step(build, r"actions/upload-artifact@v\d+$")
    assert Path(upload["with"]["path"].replace("${{ matrix.recipe }}", "RECIPE")) == args.output
    assert upload["with"]["name"] == "out-${{ matrix.recipe }}"


def test_the_windows_jobs_sign_with_the_secrets_key(tmp_path: Path) -> None:
    """The key step, played with a secret and without: its options reach the build step."""
    build = load()["jobs"]["build"]
    key_step = step(build, r"AUTHENTICODE_PFX")
    assert key_step["if"] == "startsWith(matrix.recipe, 'windows-')"
    assert "secrets.AUTHENTICODE_PASSWORD" in str(step(build, r"builder run")["env"])
    github_env = tmp_path / "github-env"
    github_env.write_text("")
    base = {"PATH": os.environ["PATH"], "RUNNER_TEMP": str(tmp_path), "GITHUB_ENV": str(github_env)}
    unsigned = subprocess.run(
        ["bash", "-e", "-c", key_step["run"]],
        env={**base, "AUTHENTICODE_PFX": "", "TIMESTAMP_URL": ""},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "not signed" in unsigned.stdout and github_env.read_text() == ""
    pfx = base64.b64encode(b"pkcs12 bytes").decode()
    subprocess.run(
        ["bash", "-e", "-c", key_step["run"]],
        env={**base, "AUTHENTICODE_PFX": pfx, "TIMESTAMP_URL": "http://ts.example/"},
        check=True,
    )
    assert (tmp_path / "authenticode.p12").read_bytes() == b"pkcs12 bytes"
    written = github_env.read_text().strip().removeprefix("AUTHENTICODE_ARGS=")
    command = step(build, r"builder run")["run"].replace("$AUTHENTICODE_ARGS", written)
    args = build_parser().parse_args(command_line(command))
    assert args.authenticode_pfx == tmp_path / "authenticode.p12"
    assert args.authenticode_timestamp_url == "http://ts.example/"


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
    assert release["permissions"] == {
        "contents": "write",
        "id-token": "write",
        "attestations": "write",
    }
    assert args.attestation_key == Path("$RUNNER_TEMP/attestation.pem")
    assert args.signing_key == Path("$RUNNER_TEMP/signing-key.asc")
    merging = step(release, r"builder release")
    assert merging["env"] == {"QGA_SIGNING_PASSPHRASE": "${{ secrets.SIGNING_PASSPHRASE }}"}
    keys = step(release, r"ATTESTATION_KEY")
    assert keys["env"] == {
        "SIGNING_KEY": "${{ secrets.SIGNING_KEY }}",
        "ATTESTATION_KEY": "${{ secrets.ATTESTATION_KEY }}",
    }
    for written in ('"$RUNNER_TEMP/attestation.pem"', '"$RUNNER_TEMP/signing-key.asc"'):
        assert written in keys["run"]
    assert step(release, r"gpg --batch --verify SHA256SUMS.asc SHA256SUMS")
    platform = step(release, r"actions/attest-build-provenance@v\d+$")
    assert platform["with"] == {"subject-checksums": "release/SHA256SUMS"}


def test_only_standard_actions_pinned_to_a_major_version() -> None:
    jobs = load()["jobs"].values()
    used = {s["uses"] for job in jobs for s in job["steps"] if "uses" in s}
    assert {u.split("@")[0] for u in used} <= {
        "actions/checkout",
        "actions/upload-artifact",
        "actions/download-artifact",
        "actions/attest-build-provenance",
    }
    assert all(re.fullmatch(r"[a-z-]+/[a-z-]+@v\d+", u) for u in used), used


# What each release recipe's pinned source says in its VERSION (the integration tests build them).
QEMU_VERSIONS = {
    "linux-static-arm64": "10.0.13",
    "linux-static-qemu-11.1": "11.1.1",
    "linux-static-qemu-11.0": "11.0.3",
    "linux-static-qemu-10.0": "10.0.13",
    "linux-static-qemu-10.2": "10.2.2",
    "linux-static-qemu-7.2": "7.2.0",
    "linux-static-qemu-5.2": "5.2.0",
    "windows-msi-qemu-10.2": "10.2.2",
    "windows-msi-qemu-11.1": "11.1.1",
}


def published_names(recipe: str) -> tuple[list[str], list[str]]:
    """(the recipe's own artifacts, its packages) under the names a build gives them."""
    plan, _ = load_plan(RECIPES / f"{recipe}.yaml", Overrides())
    qemu = QEMU_VERSIONS[recipe]
    own = [artifact.name for artifact in resolve_artifacts(plan, qemu)]
    if plan.package is None:
        return own, []
    spec = package_spec(plan, qemu, 0, "#!/bin/sh\n")  # the hook does not name files
    return own, [spec.deb_file, spec.rpm_file, f"{spec.tarball_stem}.tar.gz"]


def test_the_matrix_publishes_each_file_under_a_name_of_its_own() -> None:
    """What the fan-in merges: no two recipes of the matrix name a file alike (so `release`
    never finds a conflict), and each name says its version and machine."""
    owners: dict[str, str] = {}
    for recipe in load()["jobs"]["build"]["strategy"]["matrix"]["recipe"]:
        own, packages = published_names(recipe)
        version = f"{QEMU_VERSIONS[recipe]}+qga1"
        machine = "aarch64" if recipe.endswith("-arm64") else "x86_64"
        assert own and all(version in name and machine in name for name in own), own
        assert all(version in name for name in packages), packages
        for name in own + packages:
            assert name not in owners, f"{recipe} and {owners.get(name)} both publish {name}"
            owners[name] = recipe
    assert "qemu-ga-patched-7.2.0+qga1-linux-x86_64-static" in owners
    assert "qemu-ga-patched-10.2.2+qga1-windows-x86_64.msi" in owners
    assert "qemu-ga-patched_5.2.0+qga1-1_amd64.deb" in owners
    assert "qemu-ga-patched_10.0.13+qga1-1_arm64.deb" in owners
    assert "qemu-ga-patched-10.0.13+qga1-1.aarch64.rpm" in owners
    assert "qemu-ga-patched-10.0.13+qga1-linux-aarch64-static" in owners


NIGHTLY = ROOT / "examples" / "github-actions-nightly.yml"


def test_the_nightly_workflow_runs_every_tier() -> None:
    """`make test` on pushes, `make test-all` on a schedule: each command one the checkout has
    (.ci/run, a make target)."""
    data = yaml.safe_load(NIGHTLY.read_text())
    triggers = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as True
    assert triggers["schedule"][0]["cron"]
    runs = {
        name: " ".join(s.get("run", "") for s in job["steps"]) for name, job in data["jobs"].items()
    }
    assert "bash .ci/run" in runs["test"]
    assert "make test-all" in runs["test-all"]
    assert "schedule" in data["jobs"]["test-all"]["if"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test-all:", makefile, re.M)
    assert (ROOT / ".ci" / "run").exists()
