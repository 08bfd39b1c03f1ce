"""File operations that never follow a planted link: lock files, small files the tool writes
into directories a user chose, and atomic renames (exchange, no-replace) for publishing.

A user's directory may hold a symbolic link (or a hard link) where the tool expects its own
lock or report file; following it would truncate whatever it points to. Everything here opens
with O_NOFOLLOW, creates with O_EXCL where a file is new, and refuses what is not a plain file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from builder.errors import OutputError

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def open_lock_file(path: Path) -> int:
    """Open (or create exclusively) a lock file; refuse links and anything but a plain file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
    except FileExistsError:
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | _NOFOLLOW)
        except OSError as exc:
            raise _refused(path, exc) from None
    except OSError as exc:
        raise _refused(path, exc) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise OutputError(
            f"{path} is not a lock file qga-builder made (a special file or a hard link); "
            "refusing to use it",
            hint="remove it if nothing of yours depends on it, then run again",
        )
    return fd


def _refused(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ELOOP:
        return OutputError(
            f"{path} is a symbolic link; qga-builder never writes through a link",
            hint="remove the link (it is not the tool's), then run again",
        )
    return OutputError(
        f"cannot write {path}: {exc.strerror}", hint="choose another place with --output DIR"
    )


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file that must not exist yet (O_EXCL: a planted link or file is refused)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    except OSError as exc:
        raise _refused(path, exc) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write path atomically: a new file beside it, renamed over it."""
    with replacing_writer(path, mode) as handle:
        handle.write(data)


@contextlib.contextmanager
def replacing_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A handle on a new file `.NAME.new-XXXXXXXX` beside path, renamed over path when the
    block ends. A link at path is replaced, never followed; a directory there is refused."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise OutputError(f"{path} is a directory; expected a file qga-builder writes")
    temporary = path.with_name(f".{path.name}.new-{uuid.uuid4().hex[:8]}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    except OSError as exc:
        raise _refused(temporary, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def open_beneath(root: int, name: str) -> int:
    """A read-only descriptor on `name` (a relative path with `/`) under the directory `root`
    (a descriptor), no component of it followed if it is a link: a link raises OSError
    ELOOP (or ENOTDIR for a link in the middle), nothing outside `root` is ever opened."""
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{name!r} is not a plain relative path")
    opened: list[int] = []
    directory = root
    try:
        for part in parts[:-1]:
            directory = os.open(part, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=directory)
            opened.append(directory)
        return os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW, dir_fd=directory)
    finally:
        for fd in opened:
            os.close(fd)


def is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def rename_exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); False where unsupported."""
    return _renameat2(first, second, RENAME_EXCHANGE)


def rename_no_replace(source: Path, dest: Path) -> None:
    """Rename that fails if dest exists (even an empty directory, which rename(2) replaces)."""
    if _renameat2(source, dest, RENAME_NOREPLACE):
        return
    if os.path.lexists(dest):  # fallback: check, then rename (not atomic, but close)
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dest))
    os.rename(source, dest)


def _renameat2(source: Path, dest: Path, flags: int) -> bool:
    function = getattr(_libc(), "renameat2", None)
    if function is None:
        return False
    result = function(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(dest), flags)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # the file system cannot do it; callers fall back
    raise OSError(code, os.strerror(code), str(dest))


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC
