"""The example release workflow (examples/github-actions-release.yml), run here as CI runs it:
its build matrix read from the YAML, each recipe built with the build step's own arguments into
the layout CI's download step makes (`out/out-<recipe>/`), then the release job's own `run:`
commands (`release`, then `sha256sum --strict -c`) with bash in that directory. Every series
must land in one release, each file under a name of its own. The four Linux builds run one
after the other (never two compiles at once)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from builder.formats.checksums import parse_sha256sums, sha256_file
from tests.helpers import ROOT, run_cli

# The whole matrix (six series builds, each booting its guest; arm64; Windows 11.1, 10.2):
# make test-all.
# `make test` merges a real release in test_release.py.
pytestmark = pytest.mark.full

WORKFLOW = ROOT / "examples" / "github-actions-release.yml"
MATRIX_VALUE = "${{ matrix.recipe }}"
SERIES = {"11.1", "11.0", "10.0", "10.2", "7.2", "5.2"}
PACKAGE_KINDS = {"deb", "rpm", "tarball"}  # named the distributions' way (amd64 or x86_64)
Released = tuple[Path, subprocess.CompletedProcess[str]]  # the work directory, the merge step


def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def step_run(job: dict[str, Any], pattern: str) -> str:
    """The `run:` of the one step of `job` whose command matches `pattern`."""
    found = [s["run"] for s in job["steps"] if re.search(pattern, s.get("run", ""))]
    assert len(found) == 1, pattern
    return found[0]


def build_arguments(recipe: str, output: Path) -> list[str]:
    """The build step's arguments after `python -m builder`, for this recipe; `--output` is a
    directory of this test's (each CI job builds on a runner of its own)."""
    command = step_run(workflow()["jobs"]["build"], r"builder run ")
    # $AUTHENTICODE_ARGS: set by the Windows jobs' key step only (the session builds those).
    command = command.replace("$AUTHENTICODE_ARGS", "")
    words = shlex.split(command.replace(MATRIX_VALUE, recipe))
    args = words[words.index("builder") + 1 :]
    args[args.index("--output") + 1] = str(output)
    return args


def link_python(directory: Path) -> None:
    """`.venv/bin/python` in `directory` runs this test's Python with its packages. In a venv
    the venv itself is linked: a link to its python alone would lose the venv (Python looks
    for pyvenv.cfg beside the link, not beside the link's target)."""
    if sys.prefix != sys.base_prefix:
        (directory / ".venv").symlink_to(sys.prefix, target_is_directory=True)
        return
    (directory / ".venv" / "bin").mkdir(parents=True)
    (directory / ".venv" / "bin" / "python").symlink_to(sys.executable)


def bash(
    command: str, cwd: Path, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A step's `run:` as GitHub runs it (bash -e); this checkout's `builder` first on the
    path (CI installs the checkout into .venv; another checkout may be installed here)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}
    return subprocess.run(
        ["bash", "-e", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


SESSION_BUILDS = {
    "linux-static-arm64": "arm64_build",
    "windows-msi-qemu-10.2": "windows_102_build",
    "windows-msi-qemu-11.1": "windows_111_build",
}


@pytest.fixture(scope="module")
def downloaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release job's working directory after its download step: out/out-<recipe>/ for
    every recipe of the matrix."""
    work = tmp_path_factory.mktemp("example-release")
    runners = tmp_path_factory.mktemp("runners")  # each job's own checkout: out/<recipe>/
    recipes = workflow()["jobs"]["build"]["strategy"]["matrix"]["recipe"]
    for recipe in recipes:  # one build at a time: never two compiles at once
        built = runners / recipe
        if recipe in SESSION_BUILDS:
            # The session builds this very recipe (recipes/windows-msi-qemu-X.Y.yaml, in its
            # fixture) for the Windows tests: its output is this job's output.
            built = request.getfixturevalue(SESSION_BUILDS[recipe])
        else:
            result = run_cli(*build_arguments(recipe, built))
            assert result.returncode == 0, f"{recipe}:\n{result.stderr[-4000:]}"
        # The upload and download steps carry the output directory alone (not the run's lock
        # file beside it) to out/out-<recipe>/.
        shutil.copytree(built, work / "out" / f"out-{recipe}", symlinks=True)
    link_python(work)
    return work


@pytest.fixture(scope="module")
def released(downloaded: Path, openpgp_keys) -> Released:
    """The release job's key step (the secrets: keys made here) and merge step, as the
    workflow writes them; the OpenPGP public key committed beside them as signing-key.pub."""
    job = workflow()["jobs"]["release"]
    runner_temp = downloaded / "runner-temp"
    runner_temp.mkdir()
    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    secrets = {
        "RUNNER_TEMP": str(runner_temp),
        "ATTESTATION_KEY": key.decode(),
        "SIGNING_KEY": openpgp_keys.signer_secret.read_text(),
    }
    written = bash(step_run(job, r"ATTESTATION_KEY"), downloaded, secrets)
    assert written.returncode == 0, written.stderr
    shutil.copy(openpgp_keys.signer_public, downloaded / "signing-key.pub")
    merge = step_run(job, r"builder release ")
    env = {"RUNNER_TEMP": str(runner_temp), "QGA_SIGNING_PASSPHRASE": openpgp_keys.passphrase}
    return downloaded, bash(merge, downloaded, env)


def inputs(work: Path) -> list[Path]:
    return sorted((work / "out").iterdir())


def test_the_release_step_merges_every_series(released: Released) -> None:
    work, merge = released
    assert merge.returncode == 0, merge.stdout + merge.stderr[-4000:]
    assert "Traceback" not in merge.stderr
    for directory in inputs(work):  # each job's manifest, byte for byte
        recipe = directory.name.removeprefix("out-")
        assert (work / "release" / "manifests" / f"{recipe}.json").read_bytes() == (
            directory / "manifest.json"
        ).read_bytes()


def test_every_input_artifact_is_in_the_release_by_content(released: Released) -> None:
    work, merge = released
    assert merge.returncode == 0, merge.stderr[-4000:]
    release = work / "release"
    published = parse_sha256sums((release / "SHA256SUMS").read_text())
    for directory in inputs(work):
        for name, digest in parse_sha256sums((directory / "SHA256SUMS").read_text()).items():
            assert published.get(name) == digest, f"{directory.name}: {name}"
            assert sha256_file(release / name) == digest, f"{directory.name}: {name}"


def test_identical_files_appear_once(released: Released) -> None:
    """Each name once at the top, held by exactly the inputs that hold it."""
    work, merge = released
    assert merge.returncode == 0, merge.stderr[-4000:]
    record = json.loads((work / "release" / "release.json").read_text())
    holders: dict[str, set[str]] = {}
    for directory in inputs(work):
        recipe = json.loads((directory / "manifest.json").read_text())["recipe"]["name"]
        for name in parse_sha256sums((directory / "SHA256SUMS").read_text()):
            holders.setdefault(name, set()).add(recipe)
    listed = [artifact["name"] for artifact in record["artifacts"]]
    assert sorted(listed) == sorted(set(listed)) == sorted(holders)
    for artifact in record["artifacts"]:
        assert set(artifact["recipes"]) == holders[artifact["name"]]


def test_the_check_step_passes(released: Released) -> None:
    work, merge = released
    assert merge.returncode == 0, merge.stderr[-4000:]
    check = step_run(workflow()["jobs"]["release"], r"sha256sum --strict -c")
    home = work / "runner-gnupg"  # the runner's own home; here not root's
    home.mkdir(mode=0o700, exist_ok=True)
    result = bash(check, work, {"GNUPGHOME": str(home)})
    assert "Good signature" in result.stderr, result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": FAILED" not in result.stdout and result.stdout.count(": OK") > len(SERIES)
    assert run_cli("verify", str(work / "release")).returncode == 0


def test_the_record_lists_every_series_and_its_machine(released: Released) -> None:
    work, merge = released
    assert merge.returncode == 0, merge.stderr[-4000:]
    record = json.loads((work / "release" / "release.json").read_text())
    recipes = record["recipes"]
    assert {r["name"] for r in recipes} == {d.name.removeprefix("out-") for d in inputs(work)}
    assert {r["series"] for r in recipes} == SERIES
    assert {r["architecture"] for r in recipes} == {"x86_64", "aarch64"}
    for recipe in recipes:
        assert recipe["target"] == recipe["name"].split("-", 1)[0]  # linux-... or windows-...
        assert recipe["qemu_version"].startswith(recipe["series"] + ".")


def test_every_name_says_its_version_and_machine(released: Released) -> None:
    """No file of one series or machine can take another's name: the agents, MSI and exe carry
    the QEMU version and x86_64 or aarch64; the packages their distributions' names (version,
    amd64 or x86_64, arm64 or aarch64);
    no loose service file (one name for every series) is published."""
    work, merge = released
    assert merge.returncode == 0, merge.stderr[-4000:]
    record = json.loads((work / "release" / "release.json").read_text())
    versions = {r["name"]: r["qemu_version"] for r in record["recipes"]}
    for artifact in record["artifacts"]:
        name, kind = artifact["name"], artifact["kind"]
        assert kind != "service", name
        for recipe in artifact["recipes"]:
            assert versions[recipe] in name, (name, recipe)
        arm = any(recipe.endswith("-arm64") for recipe in artifact["recipes"])
        if arm:
            machine = ("arm64", "aarch64") if kind in PACKAGE_KINDS else ("aarch64",)
        else:
            machine = ("amd64", "x86_64") if kind in PACKAGE_KINDS else ("x86_64",)
        assert any(word in name for word in machine), name
