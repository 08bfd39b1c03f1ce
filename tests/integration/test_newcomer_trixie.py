"""The README's newcomer path on Debian 13 (trixie) with its own Python (3.13), as
test_newcomer.py plays it on this Debian 12 host: a fresh trixie system (a container of the
tool's own trixie base) whose only link to this machine is the Docker engine's socket, as a
host's `docker` group gives it. Root runs the set-up once, as the README says (`sudo
scripts/setup.sh`, played as root with SUDO_USER); then, as a user in the socket's group with no
virtualenv active: the card's command as typed, `make lint`, `make build` (which compiles,
packages and boots its guest inside that system) and the release checked with
`sha256sum --strict -c`.

About 2-3 minutes: the set-up installs the host tools anew there; the build shares this
machine's engine (its images and compiler cache). The system is a container driven with the
docker CLI (the test's harness, not the tool: the tool itself never mounts a host path).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.config.plan import debootstrap_base
from builder.engine import Engine
from builder.host.cache import Cache
from builder.stages.base_image import ensure_base
from tests.integration.test_host_pythons import PIP_CA, PIP_SETTINGS, checkout_tar

SOCKET = "/var/run/docker.sock"
USER, HOME = "newcomer", "/home/newcomer"
CHECKOUT = f"{HOME}/qga-builder"
LOGIN_PATH = "/usr/local/bin:/usr/bin:/bin"  # a login shell's: no venv
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # sudo's secure_path


class System:
    """A trixie system in a container: commands as root or as the user, output kept."""

    def __init__(self, name: str) -> None:
        self.name = name
        # The host's pip settings, as a newcomer behind this network's proxy has them.
        self.env = {n: os.environ[n] for n in PIP_SETTINGS if os.environ.get(n)}
        cert = Path(os.environ.get("PIP_CERT") or "/nonexistent")
        if cert.is_file():
            self.put_file(cert.read_bytes(), PIP_CA)
            self.env["PIP_CERT"] = PIP_CA

    def put_file(self, data: bytes, path: str) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(Path(path).name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        self.put(buffer.getvalue(), str(Path(path).parent))

    def run(self, script: str, *, user: str = "root", timeout: float = 1800) -> str:
        env = [f"--env={key}={value}" for key, value in self.env.items()]
        home, path = (HOME, LOGIN_PATH) if user == USER else ("/root", ROOT_PATH)
        command = [
            "docker", "exec", "--user", user, "--workdir", CHECKOUT if user == USER else "/",
            f"--env=HOME={home}", f"--env=PATH={path}", "--env=LANG=C.UTF-8", *env,
            self.name, "bash", "-euo", "pipefail", "-c", script,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        printed = result.stdout + result.stderr
        assert result.returncode == 0, (
            f"{user}: {script}\n(exit {result.returncode})\n{printed[-6000:]}"
        )
        assert "Traceback" not in printed, printed[-6000:]
        return printed

    def put(self, data: bytes, dest: str) -> None:
        subprocess.run(
            ["docker", "cp", "-", f"{self.name}:{dest}"], input=data, check=True, timeout=300
        )


@pytest.fixture
def trixie(engine: Engine) -> Iterator[System]:
    base = ensure_base(engine, debootstrap_base("trixie"), Cache.default(), lambda line: None)
    name = f"qga-newcomer-trixie-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "run", "--detach", "--name", name, "--hostname", "trixie-newcomer",
         "--volume", f"{SOCKET}:{SOCKET}", "--memory", "8g", "--label", "qga-builder.test=1",
         base.image_id, "sleep", "infinity"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        yield System(name)
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, timeout=120)


def _seed_sources(system: System) -> None:
    """The source tarballs this machine fetched, in the user's own cache (as test_newcomer)."""
    mine = Path.home() / ".cache" / "qga-builder"
    parts = [part for part in ("sources", "checked") if (mine / part).is_dir()]
    if parts:
        tar = subprocess.run(
            ["tar", "-C", str(mine), "-cf", "-", *parts], capture_output=True, check=True
        ).stdout
        system.run(f"mkdir -p {HOME}/.cache/qga-builder")
        system.put(tar, f"{HOME}/.cache/qga-builder")


@pytest.mark.full  # make test plays the path on this Debian 12 host (test_newcomer.py)
def test_the_newcomer_path_on_debian_13(trixie: System) -> None:
    system = trixie
    socket_gid = os.stat(SOCKET).st_gid
    system.run(
        f"useradd --create-home --home-dir {HOME} --shell /bin/bash {USER}"
        f" && (getent group {socket_gid} >/dev/null || groupadd --gid {socket_gid} hostdocker)"
        f" && usermod --append --groups $(getent group {socket_gid} | cut -d: -f1) {USER}"
    )
    system.put(checkout_tar(), HOME)
    _seed_sources(system)
    system.run(f"chown -R {USER}: {HOME}")

    # Root, once: the set-up (apt, the venv as the user, the engine that answers, the base).
    system.run(f"cd {CHECKOUT} && SUDO_USER={USER} scripts/setup.sh", timeout=2400)
    version = system.run("python --version", user=USER)
    assert version.startswith("Python 3.13"), version  # Debian 13's own, via python-is-python3
    venv = system.run("readlink -f .venv/bin/python", user=USER)
    assert venv.strip().startswith("/usr/bin/python3"), venv

    # As the user, no venv active: the card's command as typed, lint, the main job.
    assert "qga-builder" in system.run("python -m builder --version", user=USER)
    system.run("python -m builder validate recipes/linux-static.yaml", user=USER)
    system.run("make -s lint", user=USER, timeout=900)
    system.run("make build", user=USER, timeout=3600)
    manifest = json.loads(system.run("cat out/linux-static/manifest.json", user=USER))
    assert manifest["cache"]["hit"] is False  # built there, not served from a cache
    assert manifest["vm_test"]["passed"] and manifest["vm_test"]["mode"] == "guest"
    assert manifest["host"]["python"].startswith("3.13"), manifest["host"]
    checked = system.run("cd out/linux-static && sha256sum --strict -c SHA256SUMS", user=USER)
    assert ": FAILED" not in checked and checked.count(": OK") >= 5, checked
    owners = system.run("stat -c %U out/linux-static/* | sort -u", user=USER).split()
    assert owners == [USER], owners
