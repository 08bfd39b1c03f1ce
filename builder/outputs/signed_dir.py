"""A signed directory (a run's output or a release, made with a signing key) checked as its
users check it, without Docker: `gpg --verify SHA256SUMS.asc SHA256SUMS`, then
`sha256sum --strict -c SHA256SUMS`, and nothing else there.

1. SHA256SUMS.asc must be a good signature of SHA256SUMS by the public key given (its primary
   key or a subkey of it); the bytes checked are the bytes then read as the list;
2. every line of SHA256SUMS must match its file;
3. the directory holds nothing else: only the files SHA256SUMS lists (a signed output lists its
   step logs too), SHA256SUMS and SHA256SUMS.asc, and the directories that hold listed files.

Every file is opened beneath the directory without following a link (a link is never followed
out of it: listed, it is a changed file; unlisted, an extra one), read within a bound.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import (
    ExtraFileError,
    InputError,
    MissingFileError,
    SignatureMissingError,
    TamperedFileError,
)
from builder.formats.checksums import CHUNK, parse_sha256sums
from builder.formats.manifest import SIGNATURE_NAME, SUMS_NAME
from builder.host.files import open_beneath
from builder.host.openpgp import MAX_SIGNATURE_BYTES, PublicKey

MAX_SUMS_BYTES = 1 << 20
MAX_LISTED = 4096  # lines of SHA256SUMS
MAX_ENTRIES = 8192  # entries walked in the directory
MAX_DEPTH = 8
MAX_FILE_BYTES = 1 << 30


@dataclass
class Findings:
    tampered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Checked:
    files: int
    fingerprint: str


def open_directory(directory: Path, label: str) -> int:
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{label}: it does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(
                f"{label}: it is a symbolic link (name the directory itself)"
            ) from None
        if exc.errno == errno.ENOTDIR:
            raise InputError(f"{label}: it is not a directory") from None
        raise InputError(f"{label}: {exc.strerror}") from None


def read_beneath(root: int, name: str, limit: int) -> bytes | None:
    """The bytes of a regular file directly in `root`; None when it is missing."""
    try:
        fd = open_beneath(root, name)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TamperedFileError(f"{name} is not a regular file ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise TamperedFileError(f"{name} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise TamperedFileError(f"{name} is larger than {limit} bytes")
    return data


def read_signed_sums(root: int, key: PublicKey, label: str) -> bytes:
    """SHA256SUMS's bytes once SHA256SUMS.asc proved them signed by `key`."""
    try:
        signature = read_beneath(root, SIGNATURE_NAME, MAX_SIGNATURE_BYTES)
        sums = read_beneath(root, SUMS_NAME, MAX_SUMS_BYTES)
    except TamperedFileError as exc:
        raise TamperedFileError(f"{label}: {exc.message}") from None
    if signature is None:
        raise SignatureMissingError(
            f"{label}: {SIGNATURE_NAME} is missing: nothing proves who made these files"
        )
    if sums is None:
        raise MissingFileError(f"{label}: {SUMS_NAME} is missing (its signature is there)")
    key.verify(signature, sums, f"{label}: {SIGNATURE_NAME}")
    return sums


def hash_beneath(root: int, name: str) -> str | None:
    """The sha256 of `name` beneath root; None when it is missing; a reason when it is a link
    or not a regular file (raised as ValueError)."""
    try:
        fd = open_beneath(root, name)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ValueError(f"{name} (a symbolic link, or under one)") from None
        raise ValueError(f"{name} ({exc.strerror})") from None
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ValueError(f"{name} (not a regular file)")
        while chunk := handle.read(CHUNK):
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise ValueError(f"{name} (larger than {MAX_FILE_BYTES} bytes)")
            digest.update(chunk)
    return digest.hexdigest()


def _walk(root: int, prefix: str = "", depth: int = 0, found: list[str] | None = None) -> list[str]:
    """Every entry beneath root, as `a/b` (directories too, as `a/`), links not followed."""
    found = [] if found is None else found
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                if len(found) >= MAX_ENTRIES:
                    raise InputError(f"it holds more than {MAX_ENTRIES} files")
                name = prefix + entry.name
                if not _is_directory(entry, name):
                    found.append(name)
                    continue
                found.append(name + "/")
                if depth >= MAX_DEPTH:
                    continue  # listed files cannot be this deep: the folder itself is extra
                try:
                    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                    child = os.open(entry.name, flags, dir_fd=root)
                except OSError as exc:
                    raise InputError(f"{name}/ cannot be read ({exc.strerror})") from None
                try:
                    _walk(child, name + "/", depth + 1, found)
                finally:
                    os.close(child)
    except OSError as exc:  # the listing itself (an entry's own errors are named above)
        raise InputError(f"{prefix or './'} cannot be listed ({exc.strerror})") from None
    return found


def _is_directory(entry: os.DirEntry[str], name: str) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError as exc:
        raise InputError(f"{name} cannot be read ({exc.strerror})") from None


def _parse(sums_bytes: bytes, label: str) -> dict[str, str]:
    try:
        sums = parse_sha256sums(sums_bytes.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{label}: {SUMS_NAME} is not a checksum list ({exc})") from None
    if len(sums) > MAX_LISTED:
        raise InputError(f"{label}: {SUMS_NAME} lists more than {MAX_LISTED} files")
    for name in sums:
        parts = name.split("/")
        if name in (SUMS_NAME, SIGNATURE_NAME) or any(p in ("", ".", "..") for p in parts):
            raise InputError(f"{label}: {SUMS_NAME} names {name!r}, which cannot be checked")
    return sums


def find_differences(root: int, sums: dict[str, str]) -> Findings:
    findings = Findings()
    for name in sorted(sums):
        try:
            digest = hash_beneath(root, name)
        except ValueError as exc:
            findings.tampered.append(str(exc))
            continue
        if digest is None:
            findings.missing.append(name)
        elif digest != sums[name]:
            findings.tampered.append(name)
    holders = {
        "/".join(name.split("/")[:i]) + "/" for name in sums for i in range(1, name.count("/") + 1)
    }
    allowed = set(sums) | holders | {SUMS_NAME, SIGNATURE_NAME}
    findings.extra = sorted(name for name in _walk(root) if name not in allowed)
    return findings


def check_signed_directory(directory: Path, key: PublicKey) -> Checked:
    """Signature, sums, nothing else; one error (its own exit code) naming the files."""
    label = str(directory)
    root = open_directory(directory, label)
    try:
        sums = _parse(read_signed_sums(root, key, label), label)
        try:
            findings = find_differences(root, sums)
        except InputError as exc:
            raise InputError(f"{label}: {exc.message}") from None
    finally:
        os.close(root)
    conclude(label, findings)
    return Checked(len(sums), key.fingerprint)


def conclude(label: str, findings: Findings) -> None:
    """Raise the worst finding's error (changed, then missing, then extra), saying the rest."""
    said = (
        (TamperedFileError, findings.tampered, "differs", "differ", f"from its {SUMS_NAME} line"),
        (MissingFileError, findings.missing, "is", "are", f"listed in {SUMS_NAME} but missing"),
        (ExtraFileError, findings.extra, "is", "are", f"there but not listed in {SUMS_NAME}"),
    )
    parts = [
        f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''} "
        f"{one if len(names) == 1 else several} {rest}"
        for _, names, one, several, rest in said
        if names
    ]
    for error, names, *_ in said:
        if names:
            raise error(f"{label}: " + "; ".join(parts))
