"""Debian's archive index, trusted the way apt trusts it, for `bump`: dists/SUITE/InRelease
verified with gpgv against the archive keyring, Sources checked against the sha256 the verified
InRelease gives, a .dsc against Sources, an orig tarball against its .dsc. Nothing here runs apt
(its lists would be the host's or a private state's; this reads one suite's index and is done).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import lzma
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from builder.errors import HostToolError, InputError
from builder.host import debian
from builder.log import LineSink

Unpack = Callable[[bytes], bytes]

SOURCES_INDEXES: tuple[tuple[str, Unpack], ...] = (
    ("main/source/Sources.xz", lzma.decompress),
    ("main/source/Sources.gz", gzip.decompress),
    ("main/source/Sources", bytes),
)


def packages_indexes(architecture: str) -> tuple[tuple[str, Unpack], ...]:
    """main/binary-ARCH/Packages, in the compressions a mirror may serve (the first one wins)."""
    name = f"main/binary-{architecture}/Packages"
    return ((f"{name}.xz", lzma.decompress), (f"{name}.gz", gzip.decompress), (name, bytes))


# What the index may name: a pool directory and plain file names, never a way out of the pool.
_DIRECTORY = re.compile(r"pool/[a-z0-9-]{1,32}/[a-z0-9]{1,5}/[a-z0-9][a-z0-9+.-]{0,63}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.~_-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"[0-9A-Za-z.+~:-]{1,64}")  # what a recipe's pin may say


class Missing(Exception):
    """The mirror has no such file (HTTP 404/410, or no such file under a file:// mirror)."""


class NoSuite(InputError):
    """The mirror has no dists/SUITE/InRelease: a suite it does not serve."""


@dataclass(frozen=True)
class SourceEntry:
    """One version of a source package as a suite's Sources lists it."""

    package: str
    version: str
    directory: str
    files: dict[str, str]  # file name -> sha256 (Checksums-Sha256)


# What the mirror may send, at most (its files are sha256-checked only once they are here): an
# InRelease, a .dsc, an index, an orig tarball (QEMU's is ~130 MB), and for how long.
MAX_INRELEASE_BYTES = 16 << 20
MAX_DSC_BYTES = 1 << 20
MAX_INDEX_BYTES = 256 << 20
MAX_INDEX_TEXT_BYTES = 1 << 30  # decompressed
MAX_FILE_BYTES = 2 << 30
DOWNLOAD_SECONDS = 1800


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects stay on the mirror's scheme and host: every request goes to the configured
    mirror, nowhere else (urllib would follow one to any host, https to http)."""

    def redirect_request(  # type: ignore[no-untyped-def]
        self, req, fp, code, msg, headers, newurl
    ):
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if (old.scheme, old.netloc) != (new.scheme, new.netloc):
            raise urllib.error.URLError(
                f"redirected off the mirror, to {new.scheme}://{new.netloc}"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameHostRedirects)


def download(url: str, dest: Path, limit: int = MAX_FILE_BYTES) -> str:
    """Stream url to dest; its sha256. Missing when the mirror has no such file; more than
    `limit` bytes, or longer than DOWNLOAD_SECONDS, is a refusal; a file that is only partly
    written is removed."""
    digest = hashlib.sha256()
    deadline, size = time.monotonic() + DOWNLOAD_SECONDS, 0
    try:
        with _OPENER.open(url, timeout=60) as response, dest.open("wb") as out:
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise ValueError(f"more than {limit} bytes, more than such a file holds")
                if time.monotonic() > deadline:
                    raise ValueError(f"still downloading after {DOWNLOAD_SECONDS} s")
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        dest.unlink(missing_ok=True)
        if exc.code in (404, 410):
            raise Missing(url) from None
        raise InputError(f"cannot download {url}: {exc}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        dest.unlink(missing_ok=True)
        if isinstance(getattr(exc, "reason", None), FileNotFoundError):
            raise Missing(url) from None
        raise InputError(f"cannot download {url}: {exc}") from None
    return digest.hexdigest()


def exists(url: str) -> bool:
    """Whether the mirror still serves url (headers only: for a file already in the cache)."""
    try:
        with _OPENER.open(urllib.request.Request(url, method="HEAD"), timeout=60):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            return False
        raise InputError(f"cannot reach {url}: {exc}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        if isinstance(getattr(exc, "reason", None), FileNotFoundError):
            return False
        raise InputError(f"cannot reach {url}: {exc}") from None


def verified_release(
    mirror: str,
    suite: str,
    keyring: Path,
    workdir: Path,
    log: LineSink,
    allow_expired: bool = False,
) -> dict[str, str]:
    """dists/SUITE/InRelease, its signature verified with keyring: the fields of the text gpgv
    vouches for (never the file's own bytes, which may carry unsigned text around the signed
    part)."""
    url = f"{mirror}/dists/{suite}/InRelease"
    signed, text = workdir / f"{suite}.InRelease", workdir / f"{suite}.Release"
    log(f"downloading {url}")
    try:
        download(url, signed, MAX_INRELEASE_BYTES)
    except Missing:
        raise NoSuite(f"the mirror has no {url}: is {suite!r} a suite of it?") from None
    _gpgv(signed, text, suite, keyring)
    fields = parse_deb822(text.read_text(errors="replace"))
    if not fields:
        raise InputError(f"InRelease of {suite}: the signed text holds no fields")
    release = fields[0]
    if suite not in (release.get("Suite"), release.get("Codename")):
        raise InputError(
            f"InRelease of {suite}: it is signed for suite {release.get('Suite')!r} "
            f"(codename {release.get('Codename')!r}), not {suite!r}"
        )
    _check_valid_until(release, suite, log if allow_expired else None)
    return release


def _gpgv(signed: Path, text: Path, suite: str, keyring: Path) -> None:
    if shutil.which("gpgv") is None:
        raise HostToolError(
            "checking InRelease needs gpgv on this host", hint="apt-get install gpgv"
        )
    if not keyring.is_file():
        raise InputError(
            f"the archive keyring {keyring} is missing",
            hint="apt-get install debian-archive-keyring, or name another with --keyring",
        )
    with tempfile.TemporaryDirectory(prefix="qga-gpgv-") as home:  # never the user's keyrings
        process = subprocess.run(
            [
                *("gpgv", "--homedir", home, "--keyring", str(keyring.resolve())),
                *("--status-fd", "1", "--output", str(text), str(signed)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    status = process.stdout
    # As apt: a good signature (GOODSIG and VALIDSIG) by a key that has neither expired nor
    # been revoked (gpgv exits 0 and says VALIDSIG for those too, with EXPKEYSIG/REVKEYSIG).
    refused = ("[GNUPG:] EXPKEYSIG ", "[GNUPG:] REVKEYSIG ", "[GNUPG:] BADSIG ", "[GNUPG:] ERRSIG ")
    good = "[GNUPG:] GOODSIG " in status and "[GNUPG:] VALIDSIG " in status
    if process.returncode != 0 or not good or any(word in status for word in refused):
        said = [line for line in process.stderr.splitlines() if line.strip()]
        raise InputError(
            f"InRelease of {suite}: its signature does not verify with {keyring}"
            + (f" ({said[-1].strip()})" if said else ""),
            hint="a mirror must serve the archive's own signed index (--keyring names the "
            "keyring to trust)",
        )


def _check_valid_until(release: dict[str, str], suite: str, warn: LineSink | None) -> None:
    """An index past its Valid-Until is a replay of an old one (or a mirror gone stale); a
    snapshot mirror's always is, and the user may say so (`warn`: log it and go on)."""
    value = release.get("Valid-Until")
    if not value:
        return
    try:
        until = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise InputError(f"InRelease of {suite}: Valid-Until {value!r} is no date") from None
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    if until < datetime.now(UTC):
        if warn is not None:
            warn(f"InRelease of {suite}: expired (Valid-Until {value}); taken as asked")
            return
        raise InputError(
            f"InRelease of {suite}: expired (Valid-Until {value})",
            hint="a snapshot mirror's index is past its date by design: --allow-expired-index "
            "takes it (as apt's Check-Valid-Until=false); the signature is still checked",
        )


def release_sha256(release: dict[str, str]) -> dict[str, str]:
    """InRelease's SHA256 field: index path -> sha256."""
    sums = {}
    for line in release.get("SHA256", "").splitlines():
        words = line.split()
        if len(words) == 3 and _SHA256.fullmatch(words[0]):
            sums[words[2]] = words[0]
    return sums


def sources_text(
    mirror: str, suite: str, release: dict[str, str], workdir: Path, log: LineSink
) -> str:
    """main/source/Sources of a verified suite, checked against InRelease and decompressed."""
    return index_text(mirror, suite, release, SOURCES_INDEXES, workdir, log)


def index_text(
    mirror: str,
    suite: str,
    release: dict[str, str],
    indexes: tuple[tuple[str, Unpack], ...],
    workdir: Path,
    log: LineSink,
) -> str:
    """One index of a verified suite (Sources, or an architecture's Packages), in the first
    compression the mirror serves, checked against the sha256 InRelease gives, decompressed."""
    sums = release_sha256(release)
    what = indexes[-1][0]
    listed = [(name, unpack) for name, unpack in indexes if name in sums]
    if not listed:
        raise InputError(f"InRelease of {suite} lists no {what} index")
    for name, unpack in listed:
        url = f"{mirror}/dists/{suite}/{name}"
        dest = workdir / f"{suite}.{name.replace('/', '_')}"
        log(f"downloading {url}")
        try:
            digest = download(url, dest, MAX_INDEX_BYTES)
        except Missing:
            continue
        if digest != sums[name]:
            raise InputError(
                f"{suite}'s {name}: sha256 {digest} is not {sums[name]}, which InRelease gives",
                hint="the mirror may be updating: try again later",
            )
        try:
            return _bounded_unpack(dest, unpack).decode("utf-8", errors="replace")
        except (lzma.LZMAError, OSError, EOFError, ValueError) as exc:
            raise InputError(f"{suite}'s {name}: cannot decompress it: {exc}") from None
        finally:
            dest.unlink(missing_ok=True)  # a Packages index is tens of MB: kept as text only
    raise InputError(f"{suite}: InRelease lists {what} but the mirror has none")


def _bounded_unpack(path: Path, unpack: Unpack) -> bytes:
    """The index decompressed, refused past MAX_INDEX_TEXT_BYTES (a signed index is still
    input: a small file must not become gigabytes)."""
    if unpack is bytes:
        return path.read_bytes()
    opener = lzma.open if unpack is lzma.decompress else gzip.open
    with opener(path, "rb") as stream:
        data = stream.read(MAX_INDEX_TEXT_BYTES + 1)
    if len(data) > MAX_INDEX_TEXT_BYTES:
        raise ValueError(f"it decompresses to more than {MAX_INDEX_TEXT_BYTES} bytes")
    return data


def source_entries(text: str, package: str) -> list[SourceEntry]:
    """Every version of `package` that a Sources index lists."""
    entries = []
    for fields in _paragraphs(text, {package}):
        directory = fields.get("Directory", "")
        version = fields.get("Version", "")
        if not _VERSION.fullmatch(version) or not _DIRECTORY.fullmatch(directory):
            continue  # nothing a pin or a pool path can be made of
        entries.append(SourceEntry(package, version, directory, checksums(fields)))
    return entries


def binary_versions(text: str, packages: Iterable[str]) -> dict[str, str]:
    """The newest version a Packages index lists of each of `packages` (those it lists)."""
    newest: dict[str, str] = {}
    for fields in _paragraphs(text, set(packages)):
        name, version = fields.get("Package", ""), fields.get("Version", "")
        if _VERSION.fullmatch(version) and (
            name not in newest or compare_versions(version, newest[name]) > 0
        ):
            newest[name] = version
    return newest


_SEPARATOR = re.compile(r"\n[ \t]*\n")


def _paragraphs(text: str, packages: set[str]) -> Iterator[dict[str, str]]:
    """The paragraphs of an index whose Package is one of `packages`, found where their
    Package line is (an index has tens of thousands of paragraphs: the others are neither
    parsed nor copied)."""
    if not packages:
        return
    names = "|".join(re.escape(name) for name in sorted(packages))
    line = rf"Package:[ \t]*(?:{names})[ \t]*(?=\n|$)"
    # "\nPackage:" first: a literal the regex engine seeks fast (a `^` in re.M mode is tried
    # at every character of tens of MB)
    found = [m.start() + 1 for m in re.finditer(rf"\n{line}", text)]
    for at in [0] * bool(re.match(line, text)) + found:
        end = _SEPARATOR.search(text, at)
        yield parse_deb822(text[_paragraph_start(text, at) : end.start() if end else len(text)])[0]


def _paragraph_start(text: str, at: int) -> int:
    """Where the paragraph holding the line that starts at `at` begins: after the last blank
    line (empty, or spaces and tabs only, as _SEPARATOR takes it) before it."""
    newline = at - 1  # the end of the line before
    while newline > 0:
        begin = text.rfind("\n", 0, newline)
        if not text[begin + 1 : newline].strip(" \t"):
            return newline + 1
        if begin < 0:
            return 0
        newline = begin
    return 0


def checksums(fields: dict[str, str]) -> dict[str, str]:
    """Checksums-Sha256 of a Sources paragraph or a .dsc: file name -> sha256 (names that are
    not plain file names are left out)."""
    found = {}
    for line in fields.get("Checksums-Sha256", "").splitlines():
        words = line.split()
        if len(words) == 3 and _SHA256.fullmatch(words[0]) and _FILE_NAME.fullmatch(words[2]):
            found[words[2]] = words[0]
    return found


def parse_deb822(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs (Release, Sources, .dsc): a multi-line field's value keeps its lines,
    joined with newlines (the first line is what follows the colon)."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, key = {}, ""
        elif line.startswith("#"):
            continue
        elif line[0] in " \t":
            if key:
                current[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            current[key] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def dsc_fields(text: str) -> dict[str, str]:
    """A .dsc's fields. Its own signature (the uploader's) is not what vouches for it here:
    its sha256 in the verified Sources is; the armor is only cut off."""
    if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        body = text.split("\n\n", 1)[-1]
        text = body.split("\n-----BEGIN PGP SIGNATURE-----", 1)[0]
    paragraphs = parse_deb822(text)
    return paragraphs[0] if paragraphs else {}


def orig_tarballs(files: dict[str, str], package: str, version: str) -> dict[str, str]:
    """The orig tarball(s) among a source package's files (not its signature, not components)."""
    upstream = re.escape(debian.upstream_version(version))
    pattern = re.compile(rf"{re.escape(package)}_{upstream}\.orig\.tar\.(xz|gz|bz2)")
    return {name: digest for name, digest in files.items() if pattern.fullmatch(name)}


# --- Debian version order (dpkg's verrevcmp) --------------------------------------------------


def _order(char: str) -> int:
    if char == "~":
        return -1  # before anything, even the end: 1.0~rc1 < 1.0
    if char.isascii() and char.isalpha():
        return ord(char)
    return ord(char) + 256


def _split_run(text: str, digits: bool) -> tuple[str, str]:
    index = 0
    while index < len(text) and (text[index] in "0123456789") == digits:
        index += 1
    return text[:index], text[index:]


def _compare_part(a: str, b: str) -> int:
    while a or b:
        a_text, a = _split_run(a, digits=False)
        b_text, b = _split_run(b, digits=False)
        for index in range(max(len(a_text), len(b_text))):
            ac = _order(a_text[index]) if index < len(a_text) else 0
            bc = _order(b_text[index]) if index < len(b_text) else 0
            if ac != bc:
                return -1 if ac < bc else 1
        a_number, a = _split_run(a, digits=True)
        b_number, b = _split_run(b, digits=True)
        difference = int(a_number or 0) - int(b_number or 0)
        if difference:
            return -1 if difference < 0 else 1
    return 0


def _split_version(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0) if epoch.isdigit() else 0, upstream, revision


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version a sorts before, with or after b (`dpkg --compare-versions`)."""
    a_epoch, a_upstream, a_revision = _split_version(a)
    b_epoch, b_upstream, b_revision = _split_version(b)
    if a_epoch != b_epoch:
        return -1 if a_epoch < b_epoch else 1
    return _compare_part(a_upstream, b_upstream) or _compare_part(a_revision, b_revision)
