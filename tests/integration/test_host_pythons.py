"""The newcomer's path on each Debian the tool's bases are made of: in a fresh container of the
tool's own debootstrapped base, the distribution's python3 (bookworm 3.11.2, which has no
tarfile.data_filter; trixie 3.13) makes the virtualenv, pip installs the checkout with its test
extras, and the unit suite passes there, as an unprivileged user."""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.config.plan import debootstrap_base
from builder.engine import LABEL_RECIPE, BuildContainer, Engine
from builder.host.cache import Cache
from builder.stages.base_image import ensure_base
from tests.helpers import ROOT

PYTHONS = {"bookworm": (3, 11), "trixie": (3, 13)}  # each suite's python3
# python3-venv carries venv's pip; the rest is what the unit suite runs (as scripts/setup.sh
# installs it on a host): git for local git sources, gcc, strip and patch on real files, wixl,
# msitools and gcab for small MSIs, openssl for TLS certificates (dpkg-deb is in every Debian).
PACKAGES = ["python3", "python3-venv", "ca-certificates", "git", "xz-utils"]
PACKAGES += ["gcc", "libc6-dev", "patch", "wixl", "msitools", "gcab", "openssl"]
# gpg makes and uses the tests' keys through its agent (only recommended by gpg: asked for).
PACKAGES += ["gpg", "gpg-agent", "gpgv"]
# Authenticode: osslsigncode (Debian 12's is 2.5: its offline time stamp is refused, as tested),
# a softhsm2 token reached through OpenSSL's pkcs11 engine.
PACKAGES += ["osslsigncode", "softhsm2", "libengine-pkcs11-openssl"]
# apt and dpkg as root need these of Docker's default set (the tool's own boxes drop them all).
APT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL")
# The host's pip settings go in too: a host behind a TLS-inspecting proxy names its CA in
# PIP_CERT, and a newcomer there would have it set (its file is copied in).
PIP_SETTINGS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT")
PIP_CA = "/opt/host-pip-ca.pem"
USER, HOME = "newcomer", "/home/newcomer"
CHECKOUT = f"{HOME}/qga-builder"
VENV_PYTHON = f"{CHECKOUT}/.venv/bin/python"
VERSION = "import sys; print(*sys.version_info[:3], sep='.')"
CHOSEN_FILTER = (
    "import tarfile; from builder.formats import tar_filter; "
    "print(hasattr(tarfile, 'data_filter'), tar_filter.DATA_FILTER.__module__)"
)


class Box:
    """A container's commands with their output kept, failing the test with its tail."""

    def __init__(self, container: BuildContainer) -> None:
        self.container = container
        self.env: dict[str, str] = {}

    def ok(self, argv: list[str], *, user: str = "root", workdir: str = "/") -> str:
        lines: list[str] = []
        code = self.container.run(
            argv, on_line=lines.append, user=user, workdir=workdir, env=self.env
        )
        printed = "\n".join(lines)
        assert code == 0, f"{argv}\n(exit {code})\n{printed[-6000:]}"
        return printed

    def sh(self, script: str) -> str:
        """A script run by root."""
        return self.ok(["bash", "-euo", "pipefail", "-c", script])

    def newcomer(self, argv: list[str]) -> str:
        """A command run by the newcomer in the checkout."""
        return self.ok(argv, user=USER, workdir=CHECKOUT)

    def python(self, interpreter: str, code: str) -> str:
        """What `code` prints, run by `interpreter` as the newcomer."""
        return self.newcomer([interpreter, "-c", code]).strip()


def _take_pip_settings(box: Box) -> None:
    box.env = {name: os.environ[name] for name in PIP_SETTINGS if os.environ.get(name)}
    cert = Path(os.environ.get("PIP_CERT") or "/nonexistent")
    if cert.is_file():
        box.container.put_files(
            str(Path(PIP_CA).parent), {Path(PIP_CA).name: cert.read_bytes()}, uid=0, gid=0
        )
        box.env["PIP_CERT"] = PIP_CA


def checkout_tar() -> bytes:
    """The checkout as a newcomer has it: what git tracks or would (no .venv, no caches)."""
    command = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(command, cwd=ROOT, capture_output=True, check=True).stdout
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(set(listed.decode().split("\0")) - {""}):
            path = ROOT / name
            if path.is_file() or path.is_symlink():  # not one deleted from the work tree
                tar.add(path, arcname=f"qga-builder/{name}", recursive=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkout() -> bytes:
    return checkout_tar()


@pytest.fixture(params=sorted(PYTHONS))
def fresh_debian(request: pytest.FixtureRequest, engine: Engine) -> Iterator[tuple[str, Box]]:
    """A container of the tool's base for the suite, found (or made) as a run finds it."""
    suite = request.param
    base = ensure_base(engine, debootstrap_base(suite), Cache.default(), lambda line: None)
    with engine.container(
        base.image_id,
        labels={LABEL_RECIPE: "test-host-pythons"},
        user="root",
        network=True,  # apt and pip
        memory="4g",
        cap_add=APT_CAPS,
    ) as container:
        yield suite, Box(container)


@pytest.mark.full  # make test plays the newcomer's path on this Debian 12 host
def test_the_unit_suite_passes_with_the_distributions_python(
    fresh_debian: tuple[str, Box], checkout: bytes
) -> None:
    suite, box = fresh_debian
    box.sh(
        "export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null; "
        f"apt-get install -y -q --no-install-recommends {' '.join(PACKAGES)} >/dev/null; "
        f"useradd --create-home --home-dir {HOME} {USER}"
    )
    box.container.put_archive(HOME, checkout)
    _take_pip_settings(box)
    box.sh(f"chown -R {USER}: {CHECKOUT}")
    system = box.python("python3", VERSION)
    major, minor = (int(part) for part in system.split(".")[:2])
    assert (major, minor) == PYTHONS[suite], system
    packaged = box.sh(f"dpkg-query -W -f '${{Version}}' python{major}.{minor}")
    assert packaged.startswith(system), (packaged, system)  # Debian's own package of it

    box.newcomer(["python3", "-m", "venv", ".venv"])
    assert box.python(VENV_PYTHON, VERSION) == system  # the venv runs that same interpreter
    assert box.python(VENV_PYTHON, "import sys; print(sys.base_prefix)") == "/usr"
    box.newcomer([VENV_PYTHON, "-m", "pip", "install", "-q", "-e", ".[test]"])
    # Python's own data filter where its tarfile has one (3.11.4 and later), else ours.
    chosen = box.python(VENV_PYTHON, CHOSEN_FILTER).split()
    assert chosen in (["True", "tarfile"], ["False", "builder.formats.tar_filter"]), chosen

    unit = [VENV_PYTHON, "-m", "pytest", "-q", "tests/unit", "-p", "no:cacheprovider"]
    summary = box.newcomer(unit).strip().splitlines()[-1]
    print(f"{suite}: python3 {system} ({packaged}), data filter {chosen[1]}: {summary}")
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary
