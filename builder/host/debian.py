"""Debian's archive as this host knows it: its mirror, and source packages fetched with apt.

The mirror is read from this host's apt configuration (or QGA_BUILDER_DEBIAN_MIRROR), never
written into recipes, so a recipe works wherever Debian is reachable. apt runs with a private
state directory under the cache, so the host's own apt lists are never touched.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from builder.config import settings
from builder.config.settings import MIRROR_ENV
from builder.errors import HostToolError, InputError
from builder.host.locks import exclusive
from builder.log import LineSink

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
DEBOOTSTRAP = Path("/usr/sbin/debootstrap")  # where Debian's and Ubuntu's package put it


def host_mirror() -> str:
    """The Debian mirror this host uses: QGA_BUILDER_DEBIAN_MIRROR, else the first apt source.

    No default beyond these. debootstrap has one (its DEF_MIRROR, Debian's also in Ubuntu
    24.04's debootstrap): the hint offers it as a ready example, but the tool does not take it
    by itself, because the mirror is an input of every debootstrapped base (its tag, the
    manifest) and where every Debian source comes from: it stays the host's choice (a local
    mirror, a proxy, an air-gapped lab's copy), not a public one reached without being asked.
    """
    configured = settings.current().debian_mirror
    if configured:
        return configured
    for uri in _apt_uris():
        if "security" not in uri and uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    raise InputError(
        "no Debian mirror found in this host's apt sources (an Ubuntu host has none): "
        "debootstrapped bases and `source.debian` take Debian's suites from one",
        hint=_mirror_hint(),
    )


def _mirror_hint() -> str:
    default = debootstrap_default_mirror()
    example = (
        f"`export {MIRROR_ENV}={default}` (debootstrap's own default)"
        if default
        else f"`export {MIRROR_ENV}=http://MIRROR/debian` (MIRROR: a Debian mirror's host)"
    )
    return (
        f"set {MIRROR_ENV} to a Debian mirror's URL and run again, e.g. {example}; a recipe's "
        "`debootstrap: {mirror: URL}` or `base debootstrap --mirror URL` sets only a base "
        "image's mirror (README: Ubuntu hosts)"
    )


def debootstrap_default_mirror() -> str | None:
    """The Debian mirror debootstrap uses when given none (its DEF_MIRROR), if it is installed."""
    try:
        text = DEBOOTSTRAP.read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r'^DEF_MIRROR="(https?://[^"\s]+/debian)"$', text, re.MULTILINE)
    return found.group(1) if found else None


def _apt_uris() -> list[str]:
    uris: list[str] = []
    files = [APT_SOURCES, *sorted(APT_SOURCES_DIR.glob("*.list"))]
    for path in files:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 2 and words[0] == "deb":
                    uris.append(words[1])
    for path in sorted(APT_SOURCES_DIR.glob("*.sources")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("URIs:"):
                uris.extend(line.split()[1:])
    return uris


def upstream_version(debian_version: str) -> str:
    """1:10.0.13+ds-0+deb13u1 -> 10.0.13+ds (no epoch, no Debian revision)."""
    version = debian_version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def orig_tarball_version(path: str) -> str:
    """pool/main/q/qemu/qemu_11.1.1+ds.orig.tar.xz -> 11.1.1+ds (the upstream version its name
    carries; empty when the name is no orig tarball's)."""
    name = path.rsplit("/", 1)[-1]
    match = re.fullmatch(r"[a-z0-9][a-z0-9+.-]*_([0-9A-Za-z.+~-]+)\.orig\.tar\.[a-z0-9]+", name)
    return match.group(1) if match else ""


def qemu_release(debian_version: str) -> str | None:
    """The QEMU release a Debian qemu version packages, as its orig tarball's VERSION says it:
    1:10.0.13+ds-0+deb13u1 -> 10.0.13, 1:11.0.0~rc2+ds-1 -> 11.0.0-rc2, and Debian's X.Y for
    QEMU's X.Y.0 (1:7.2+dfsg-7+deb12u18 -> 7.2.0); None if it is no QEMU release number."""
    upstream = upstream_version(debian_version).split("+", 1)[0].replace("~rc", "-rc")
    if re.fullmatch(r"\d{1,3}\.\d{1,3}", upstream):
        upstream += ".0"
    return upstream if re.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,4}(-rc\d+)?", upstream) else None


def _private_apt(kind: str, suite: str, state_dir: Path) -> list[str]:
    """apt-get options for a private state directory listing `kind` (deb, deb-src) of suite."""
    if not KEYRING.is_file():
        raise InputError(f"{KEYRING} is missing", hint="apt-get install debian-archive-keyring")
    root = state_dir / f"{suite}-{kind}"
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    sources = root / "sources.list"
    sources.write_text(f"{kind} [signed-by={KEYRING}] {host_mirror()} {suite} main\n")
    return [
        f"-oDir::Etc::SourceList={sources}",
        "-oDir::Etc::SourceParts=/nonexistent",
        f"-oDir::State::Lists={root / 'lists'}",
        f"-oDir::Cache={root / 'cache'}",
        "-oAPT::Sandbox::User=root",
        "-oAcquire::Retries=3",
        "-q",
    ]


def _need_apt(what: str) -> None:
    if shutil.which("apt-get") is None:
        raise HostToolError(
            f"{what} needs apt-get, which this host lacks",
            hint="download the file yourself and point the recipe at it by path",
        )


def fetch_orig_tarball(
    package: str, version: str, suite: str, dest_dir: Path, state_dir: Path, log: LineSink
) -> Path:
    """Download the .orig tarball of `package=version` from `suite` with apt-get source."""
    _need_apt("source.debian")
    with _apt_state(state_dir, "deb-src", suite, log):
        return _fetch_orig_tarball(package, version, suite, dest_dir, state_dir, log)


@contextmanager
def _apt_state(state_dir: Path, kind: str, suite: str, log: LineSink) -> Iterator[None]:
    """One apt-get at a time on a private state directory (apt's own lock would make a second,
    concurrent run fail instead of wait)."""
    with exclusive(state_dir / f"{suite}-{kind}.lock", f"apt state for {suite} ({kind})", log):
        yield


def _fetch_orig_tarball(
    package: str, version: str, suite: str, dest_dir: Path, state_dir: Path, log: LineSink
) -> Path:
    options = _private_apt("deb-src", suite, state_dir)
    _apt(["apt-get", *options, "update"], state_dir, log, f"apt-get update for {suite}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    fetch = ["apt-get", *options, "source", "--download-only"]
    if _apt([*fetch, f"{package}={version}"], dest_dir, log, None) != 0:
        # A newer Debian revision often keeps the same upstream tarball: try what the suite has
        # now; the orig tarball's sha256 still decides.
        log(f"{package}={version} is not in {suite} any more; trying {package}/{suite}")
        if _apt([*fetch, f"{package}/{suite}"], dest_dir, log, None) != 0:
            raise InputError(
                f"source.debian: {package}={version} is not in {suite} on this host's mirror",
                hint=f"pin the version the suite has now (`apt-cache showsrc {package}` with a "
                f"deb-src line for {suite}) and its .orig sha256",
            )
    matches = sorted(dest_dir.glob(f"{package}_{upstream_version(version)}.orig.tar.*"))
    matches = [m for m in matches if not m.name.endswith(".asc")]
    if not matches:
        raise InputError(
            f"source.debian: {suite} has a {package} with another upstream version than "
            f"{upstream_version(version)}",
            hint="pin the new version and its .orig sha256",
        )
    return matches[0]


def fetch_deb(
    package: str, version: str, suite: str, dest_dir: Path, state_dir: Path, log: LineSink
) -> Path:
    """Download one binary package (`package=version` from `suite`) with apt-get download."""
    _need_apt(f"fetching {package}")
    with _apt_state(state_dir, "deb", suite, log):
        return _fetch_deb(package, version, suite, dest_dir, state_dir, log)


def _fetch_deb(
    package: str, version: str, suite: str, dest_dir: Path, state_dir: Path, log: LineSink
) -> Path:
    options = _private_apt("deb", suite, state_dir)
    _apt(["apt-get", *options, "update"], state_dir, log, f"apt-get update for {suite}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    if _apt(["apt-get", *options, "download", f"{package}={version}"], dest_dir, log, None) != 0:
        raise InputError(
            f"{package}={version} is not in {suite} on this host's mirror (it may have left it)",
            hint=f"pin the version {suite} has now (`apt-cache policy {package}`) and its sha256",
        )
    plain_version = version.split(":", 1)[-1]
    matches = sorted(dest_dir.glob(f"{package}_*{plain_version}_*.deb"))
    if not matches:
        raise InputError(f"apt-get downloaded {package}={version} but no .deb appeared")
    return matches[0]


def _apt(command: list[str], cwd: Path, log: LineSink, what: str | None) -> int:
    process = subprocess.run(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    for line in process.stdout.splitlines():
        log(line)
    if what and process.returncode != 0:
        raise InputError(f"{what} failed (exit {process.returncode}); see the log above")
    return process.returncode
