"""Tar archives in and out of the build, handled so that a hostile archive cannot escape.

Source tarballs are checked member by member with tarfile's `data` filter rules (no absolute
paths, no `..`, no links pointing outside, no devices) before anything uses them: Python's own
filter where it has one, else ours (`tar_filter`). Archives that come back from a container are
extracted by our own code, which takes regular files and directories only.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder.errors import ArtifactError, InputError
from builder.formats.tar_filter import DATA_FILTER, FILTER_ERRORS


@dataclass(frozen=True)
class TarballInfo:
    members: int
    top_dir: str | None  # the single directory all members live in, if there is one
    newest_mtime: int
    version: str = ""  # the top-level VERSION file's first line (QEMU's version)
    fsfreeze_hook: str = ""  # QEMU's scripts/qemu-guest-agent/fsfreeze-hook, when it has one


# QEMU's own fsfreeze hook script, which the packages ship as /etc/qemu/fsfreeze-hook.
FSFREEZE_HOOK = "scripts/qemu-guest-agent/fsfreeze-hook"
MAX_HOOK_BYTES = 64 * 1024


def hook_text(data: bytes) -> str:
    """The hook's text when it is a small shell script, else "" (nothing of it is shipped)."""
    if len(data) > MAX_HOOK_BYTES or not data.startswith(b"#!/bin/sh"):
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return ""


def _refusal(member: tarfile.TarInfo, dest: str) -> str | None:
    """Why the data filter refuses this member, or None when it is acceptable."""
    if member.isdev() or member.isfifo():
        return "is a device or FIFO"
    # The data filter would quietly strip a leading "/"; an archive that tries it is refused.
    if member.name.startswith("/") or ".." in member.name.split("/"):
        return "path is absolute or leaves the archive"
    try:
        DATA_FILTER(member, dest)
    except FILTER_ERRORS as exc:
        return str(exc)
    return None


def inspect_tarball(path: Path, *, what: str) -> TarballInfo:
    """Read every member header; refuse the archive on the first unsafe member."""
    dest = "/nonexistent-extraction-root"
    tops: set[str] = set()
    loose_files = False
    newest = 0
    count = 0
    version = ""
    hook = ""
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                reason = _refusal(member, dest)
                if reason:
                    raise InputError(f"{what} {path}: refused member {member.name!r}: {reason}")
                count += 1
                newest = max(newest, int(member.mtime))
                name = member.name.removeprefix("./").rstrip("/")
                if name in ("", "."):
                    continue
                if name.split("/")[-1] == "VERSION" and name.count("/") <= 1 and member.isfile():
                    data = tar.extractfile(member).read(64)  # type: ignore[union-attr]
                    version = data.decode(errors="replace").strip().splitlines()[0][:40]
                if member.isfile() and name.split("/", 1)[-1] == FSFREEZE_HOOK:
                    data = tar.extractfile(member).read(MAX_HOOK_BYTES + 1)  # type: ignore[union-attr]
                    hook = hook_text(data)
                head, sep, _ = name.partition("/")
                loose_files |= not sep and not member.isdir()
                tops.add(head)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"{what} {path}: not a readable tar archive: {exc}") from None
    if count == 0:
        raise InputError(f"{what} {path}: the archive is empty")
    top = next(iter(tops)) if len(tops) == 1 and not loose_files else None
    return TarballInfo(
        members=count, top_dir=top, newest_mtime=newest, version=version, fsfreeze_hook=hook
    )


@dataclass(frozen=True)
class Limits:
    """How much an archive coming back from a container may hold."""

    max_bytes: int = 1 << 30
    max_members: int = 1000


def safe_extract(
    stream: Iterable[bytes] | IO[bytes], dest: Path, *, what: str, limits: Limits = Limits()
) -> list[str]:
    """Extract an uncompressed tar stream from a container into dest; return member names.

    Whatever comes out of a container is untrusted: only regular files and directories are
    taken, with plain relative names, within a total size and a member count. Files are
    written by this code (O_EXCL, O_NOFOLLOW), not by tarfile, so nothing depends on the
    Python version's extraction filter.
    """
    fileobj = stream if hasattr(stream, "read") else _IterReader(stream)  # type: ignore[arg-type]
    names: list[str] = []
    total = 0
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:  # type: ignore[arg-type]
            for member in tar:
                reason = _unsafe(member)
                if reason:
                    raise ArtifactError(f"{what}: refused member {member.name[:200]!r}: {reason}")
                if len(names) >= limits.max_members:
                    raise ArtifactError(f"{what}: more than {limits.max_members} members")
                total += member.size
                if total > limits.max_bytes:
                    raise ArtifactError(f"{what}: more than {limits.max_bytes} bytes")
                target = dest.joinpath(*_parts(member.name))
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _write_member(tar, member, target, what)
                names.append(member.name)
    except tarfile.TarError as exc:
        raise ArtifactError(f"{what}: broken archive: {exc}") from None
    return names


def _parts(name: str) -> list[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


def _unsafe(member: tarfile.TarInfo) -> str | None:
    if not (member.isfile() or member.isdir()):
        return "not a regular file or directory (links, devices and FIFOs are refused)"
    name = member.name
    if name.startswith("/") or ".." in name.split("/") or "\0" in name or "\\" in name:
        return "path is absolute or leaves the archive"
    if not _parts(name) or len(name) > 1024 or any(ord(c) < 32 for c in name):
        return "not a plain relative name"
    return None


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, what: str) -> None:
    source = tar.extractfile(member)
    assert source is not None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, 0o755 if member.mode & 0o111 else 0o644)
    except FileExistsError:
        raise ArtifactError(f"{what}: {member.name!r} appears twice") from None
    with os.fdopen(fd, "wb") as out:
        remaining = member.size
        while remaining > 0:
            chunk = source.read(min(remaining, 1 << 20))
            if not chunk:
                raise ArtifactError(f"{what}: {member.name!r} is shorter than its header says")
            out.write(chunk)
            remaining -= len(chunk)


class _IterReader(io.RawIOBase):
    """A file-like view of an iterator of byte chunks (docker's get_archive stream)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def tar_directory(
    root: Path, dest: Path, *, arcname: str, exclude: tuple[str, ...] = (".git",)
) -> None:
    """Write an uncompressed tar of a tree to dest: root-owned entries, symlinks kept as links."""

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if any(part in exclude for part in Path(info.name).parts[1:]):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(root, arcname=arcname, filter=owned)


def tar_single_file(path: Path, *, arcname: str, uid: int, gid: int) -> tuple[IO[bytes], str]:
    """An uncompressed tar holding one file, and the sha256 of the very bytes it holds (so a
    file swapped after it was checked is caught before it is sent anywhere)."""
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller, who closes it
    with path.open("rb") as source:
        info = tarfile.TarInfo(arcname)
        info.size = os.fstat(source.fileno()).st_size
        info.mtime = int(os.fstat(source.fileno()).st_mtime)
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        info.mode = 0o644
        reader = _HashingReader(source)
        with tarfile.open(fileobj=handle, mode="w") as tar:
            tar.addfile(info, reader)
    handle.seek(0)
    return handle, reader.digest.hexdigest()


class _HashingReader:
    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        return data
