"""tarfile's `data` extraction filter, with our own copy of its rules for Pythons without it.

`tarfile.data_filter` came with Python 3.11.4 (PEP 706); Debian 12's python3 is 3.11.2. Where
it is missing, `fallback_data_filter` applies the same documented rules: refuse absolute paths,
paths and links that end outside the destination, devices and FIFOs; clear the setuid, setgid
and sticky bits and group/other write; keep no ownership from the archive. `DATA_FILTER` is
the standard library's when it has one (it follows Python's own security fixes), else ours.
"""

from __future__ import annotations

import copy
import os
import stat
import tarfile
from collections.abc import Callable


class UnsafeMember(Exception):
    """A member the data filter's rules refuse (our stand-in for tarfile.FilterError)."""


def fallback_data_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    """tarfile.data_filter's rules: a checked copy of `member`, or UnsafeMember."""
    dest = os.path.realpath(dest_path)
    name = member.name.lstrip("/" + os.sep)  # as data_filter: the slash stripped, not refused
    if os.path.isabs(name):
        raise UnsafeMember(f"member {member.name!r} has an absolute path")
    target = os.path.realpath(os.path.join(dest, name))
    if not _inside(target, dest):
        raise UnsafeMember(
            f"{member.name!r} would be extracted to {target!r}, which is outside the destination"
        )
    if not (member.isreg() or member.islnk() or member.isdir() or member.issym()):
        raise UnsafeMember(f"{member.name!r} is a special file")
    if member.islnk() or member.issym():
        _check_link(member, name, dest)
    filtered = copy.copy(member)  # TarInfo.replace() is 3.11.4's too
    filtered.name = name
    filtered.mode = _data_mode(member)  # type: ignore[assignment]
    # None: extraction sets no owner (the archive's uid/gid are not ours to apply).
    filtered.uid = filtered.gid = None  # type: ignore[assignment]
    filtered.uname = filtered.gname = None  # type: ignore[assignment]
    return filtered


def _inside(path: str, dest: str) -> bool:
    return os.path.commonpath([path, dest]) == dest


def _check_link(member: tarfile.TarInfo, name: str, dest: str) -> None:
    if os.path.isabs(member.linkname):
        raise UnsafeMember(f"{member.name!r} is a link to an absolute path")
    # A symlink is relative to its own directory, a hard link to the archive's root.
    start = os.path.join(dest, os.path.dirname(name)) if member.issym() else dest
    target = os.path.realpath(os.path.join(start, member.linkname))
    if not _inside(target, dest):
        raise UnsafeMember(
            f"{member.name!r} would link to {target!r}, which is outside the destination"
        )


def _data_mode(member: tarfile.TarInfo) -> int | None:
    """The mode data_filter keeps: no setuid/setgid/sticky, no group/other write; files
    readable and writable by their owner, executable by all only if by the owner; None
    (not applied) for directories and symlinks."""
    if member.isdir() or member.issym():
        return None
    mode = member.mode & 0o755
    if not mode & stat.S_IXUSR:
        mode &= ~0o111
    return mode | stat.S_IRUSR | stat.S_IWUSR


Filter = Callable[[tarfile.TarInfo, str], tarfile.TarInfo]

DATA_FILTER: Filter
FILTER_ERRORS: tuple[type[Exception], ...]
if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
    DATA_FILTER = tarfile.data_filter
    FILTER_ERRORS = (tarfile.FilterError, UnsafeMember)
else:  # e.g. Debian 12's 3.11.2
    DATA_FILTER = fallback_data_filter
    FILTER_ERRORS = (UnsafeMember,)
