"""Helpers the tests share: the project's paths, recipe variants, and the CLI run as a user
runs it (a subprocess of `python -m builder`)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
DEFAULT_RECIPE = RECIPES / "linux-static.yaml"  # names no patches: the series decides
EXPLICIT_RECIPE = RECIPES / "linux-static-qemu-10.0.yaml"  # the same build, everything named
WINDOWS_RECIPE = RECIPES / "windows-msi.yaml"
ARM64_RECIPE = RECIPES / "linux-static-arm64.yaml"  # the default build, cross-compiled for arm64
OLD_SERIES = ("11.1", "11.0", "10.2", "7.2", "5.2")  # the series besides the default's 10.0
CI_SERIES = "5.2"  # the one of them `make test` builds (the others: `make test-all`)


def load_default() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_RECIPE.read_text())


def load_explicit() -> dict[str, Any]:
    return yaml.safe_load(EXPLICIT_RECIPE.read_text())


def absolutize(data: dict[str, Any], base: Path = RECIPES) -> dict[str, Any]:
    """Make the recipe's relative paths absolute, so a copy works from any directory."""
    env = data["environment"]
    env["dockerfile"] = str((base / env["dockerfile"]).resolve())
    for patch in data.get("patches", []):
        patch["path"] = str((base / patch["path"]).resolve())
    return data


def localize(data: dict[str, Any], directory: Path, base: Path = RECIPES) -> dict[str, Any]:
    """Copy the recipe's Dockerfile and patches into `directory` (where the recipe will be
    written) and point at the copies: the recipe stays inside its own project."""
    directory.mkdir(parents=True, exist_ok=True)
    env = data["environment"]
    dockerfile = (base / env["dockerfile"]).resolve()
    shutil.copy(dockerfile, directory / dockerfile.name)
    env["dockerfile"] = dockerfile.name
    for patch in data.get("patches", []):
        source = (base / patch["path"]).resolve()
        if source.parent != directory.resolve():
            shutil.copy(source, directory / source.name)
        patch["path"] = source.name
    return data


def write_variant(directory: Path, name: str, *, explicit: bool = False, **changes: Any) -> Path:
    """A copy of the default recipe (or, explicit, of the one that names its patches and
    environment) under another name, with top-level fields replaced; its Dockerfile and patches
    are copied beside it."""
    data = localize(load_explicit() if explicit else load_default(), directory)
    data["name"] = name
    data.update(changes)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def artifact_of(directory: Path, kind: str) -> Path:
    """The one artifact of `kind` in an output directory, found in its manifest.json (release
    recipes put the version and machine in their names)."""
    listed = json.loads((directory / "manifest.json").read_text())["artifacts"]
    (name,) = [artifact["name"] for artifact in listed if artifact["kind"] == kind]
    return directory / name


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def start_cli(*args: str, log: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    """Start the CLI in the background, its stderr (the log) piped or sent to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "builder", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 3600) -> CliResult:
    start = time.monotonic()
    with subprocess.Popen(
        [sys.executable, "-m", "builder", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    ) as process:
        if getattr(_BESIDE, "active", False):  # a run of the session's, beside the tests
            BACKGROUND_OWNERS.add(f"{socket.gethostname()}:{process.pid}")
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    return CliResult(process.returncode, stdout, stderr, time.monotonic() - start)


# host:pid of processes the session runs beside the tests (the `prepare` the integration
# conftest starts, the runs of its work beside the tests): their containers are theirs, not a
# test's leftovers. So are those of processes running as BACKGROUND_USERS (the newcomer's).
BACKGROUND_OWNERS: set[str] = set()
BACKGROUND_USERS: set[int] = set()
_BESIDE = threading.local()


def beside_the_tests() -> None:
    """Mark this thread as the session's work beside the tests (see run_cli)."""
    _BESIDE.active = True


def _background(owner: str | None) -> bool:
    if owner in BACKGROUND_OWNERS:
        return True
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or not BACKGROUND_USERS:
        return False
    try:
        return os.stat(f"/proc/{pid}").st_uid in BACKGROUND_USERS
    except OSError:
        return False  # gone: what it left is a leftover


def leftover_containers(engine: Any) -> list[str]:
    """The tool's containers on `engine` (but the background's: `_background`); one the daemon is
    still removing (auto-remove after a kill finishes a moment after the call that asked for
    it) is waited for, up to 20 s."""
    from builder.engine import LABEL_OWNER, LABEL_TOOL

    deadline = time.monotonic() + 20
    while True:
        found = [
            c for c in engine.containers(LABEL_TOOL) if not _background(c.labels.get(LABEL_OWNER))
        ]
        if not any(c.state == "removing" for c in found) or time.monotonic() > deadline:
            return [c.name for c in found]
        time.sleep(0.5)
