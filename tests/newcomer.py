"""The README's newcomer path, played as a newcomer (test_newcomer.py checks it): a user in the
`docker` group, not root, with no virtualenv active, on this host's own Python (Debian 12's
python3).

The only root step is the one the README gives root (`sudo scripts/setup.sh`, played here with
runuser's equivalent: SUDO_USER set, a clean environment). Then, as the user: the card's command
as typed, `make lint`, a base image made without root, and `make build` with its release
checked as a user checks it. The user's cache starts with the source tarballs root already
fetched (a copy, theirs), so the build compiles, packages and boots its guest for real.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from builder.engine import Engine
from tests.helpers import BACKGROUND_USERS, ROOT

USER = "qga-newcomer"
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"  # no pyenv, no venv: a login shell's PATH
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # sudo's secure_path
TEST_BASE = "qga-builder/base:newcomer-test"


def _home() -> Path:
    return Path(pwd.getpwnam(USER).pw_dir)


def _make_user() -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    if USER not in grp.getgrnam("docker").gr_mem:
        subprocess.run(["usermod", "--append", "--groups", "docker", USER], check=True)


def _checkout(dest: Path) -> None:
    """The files a clone has (git's list), owned by the user."""
    if dest.exists():
        shutil.rmtree(dest)
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, names):
        source = ROOT / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(dest)], check=True)


def _seed_sources(cache: Path) -> None:
    """The source tarballs root fetched, copied into the user's own cache (no refetch)."""
    mine = Path.home() / ".cache" / "qga-builder"
    for part in ("apt", "sources", "checked"):
        if (mine / part).is_dir() and not (cache / part).exists():
            shutil.copytree(mine / part, cache / part, symlinks=True)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(cache.parent)], check=True)


def as_root(command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {"PATH": ROOT_PATH, "HOME": "/root", "SUDO_USER": USER, "LANG": "C.UTF-8"}
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def as_user(command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = [f"PATH={CLEAN_PATH}", f"HOME={_home()}", "LANG=C.UTF-8", f"USER={USER}"]
    return subprocess.run(
        ["runuser", "-u", USER, "--", "env", "-i", *env, "bash", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _ok(result: subprocess.CompletedProcess[str], step: str) -> str:
    assert result.returncode == 0, f"{step}: exit {result.returncode}\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr, f"{step}:\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def play(engine: Engine) -> None:
    """The whole path; an AssertionError names the step that failed. The session may play it
    beside other tests: the user's runs' containers are not their leftovers."""
    assert os.geteuid() == 0, "the test plays the root set-up step and makes a user: run as root"
    _make_user()
    BACKGROUND_USERS.add(pwd.getpwnam(USER).pw_uid)
    checkout = _home() / "qga"
    _checkout(checkout)
    cache = _home() / ".cache" / "qga-builder"
    cache.mkdir(parents=True, exist_ok=True)
    _seed_sources(cache)

    # Root, once, as the README says (sudo keeps the user's name in SUDO_USER).
    _ok(as_root("scripts/setup.sh", checkout, 1800), "sudo scripts/setup.sh")
    venv_python = checkout / ".venv" / "bin" / "python"
    assert venv_python.resolve().is_relative_to("/usr"), "the venv is not on the system Python"
    assert (checkout / ".venv").stat().st_uid == pwd.getpwnam(USER).pw_uid

    # The card's command, as typed, with no venv active.
    assert as_user("python --version", checkout, 60).stdout.startswith("Python 3.")
    out = _ok(as_user("python -m builder --version", checkout, 60), "python -m builder")
    assert "qga-builder" in out
    _ok(as_user("python -m builder validate recipes/linux-static.yaml", checkout, 120), "validate")
    _ok(as_user("make -s lint", checkout, 600), "make lint")

    # A base image without root: debootstrap runs in a container of the first base.
    try:
        made = as_user(
            f"python -m builder base debootstrap --suite bookworm --tag {TEST_BASE} --force",
            checkout,
            900,
        )
        assert "in a container of" in _ok(made, "base debootstrap as the user")
        assert engine.inspect_image(TEST_BASE) is not None
    finally:
        if engine.inspect_image(TEST_BASE) is not None:
            engine.remove_image(TEST_BASE)

    # The main job, and its release checked as a user checks it.
    _ok(as_user("make build", checkout, 3600), "make build")
    release = checkout / "out" / "linux-static"
    check = as_user("sha256sum --strict -c SHA256SUMS", release, 120)
    _ok(check, "sha256sum -c")
    assert all(path.stat().st_uid == pwd.getpwnam(USER).pw_uid for path in release.iterdir())
