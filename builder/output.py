"""Stage: the output directory. A run builds into a hidden temporary directory beside the final
one and renames it into place at the very end, so a failed or interrupted run leaves nothing that
looks like a result. A lock file keeps two runs from writing the same output directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from types import TracebackType

from builder.errors import OutputError

TMP_MARK = ".tmp-"
OLD_MARK = ".old-"


class OutputDir:
    """Context manager: lock, stage in `.NAME.tmp-RUN/`, `publish()` renames to NAME/."""

    def __init__(self, final: Path, run_id: str) -> None:
        self.final = final.absolute()
        self.parent = self.final.parent
        self.staging = self.parent / f".{self.final.name}{TMP_MARK}{run_id}"
        self._lock_path = self.parent / f".{self.final.name}.lock"
        self._lock_fd: int | None = None
        self.published = False

    def __enter__(self) -> OutputDir:
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(
                f"output directory {self.final}: cannot write to {self.parent}: {exc.strerror}",
                hint="choose another place with --output DIR",
            ) from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 64, 0).decode(errors="replace").strip()
            os.close(self._lock_fd)
            self._lock_fd = None
            raise OutputError(
                f"output directory {self.final} is being written by another run"
                + (f" (pid {holder})" if holder else ""),
                hint="wait for it to finish, or pass another --output DIR",
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        try:
            self.staging.mkdir()
        except OSError as exc:
            self._release()
            raise OutputError(f"cannot create {self.staging}: {exc.strerror}") from None
        return self

    def publish(self) -> None:
        """Replace NAME/ with the staged directory (rename on the same file system)."""
        old = None
        if self.final.exists():
            old = (
                self.parent / f".{self.final.name}{OLD_MARK}{self.staging.name.rsplit('-', 1)[-1]}"
            )
            self.final.rename(old)
        self.staging.rename(self.final)
        self.published = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.published:
            shutil.rmtree(self.staging, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = None


def stale_staging_dirs(parent: Path) -> list[Path]:
    """Staging and replaced directories that crashed runs left behind."""
    if not parent.is_dir():
        return []
    return sorted(
        p
        for p in parent.iterdir()
        if p.is_dir() and p.name.startswith(".") and (TMP_MARK in p.name or OLD_MARK in p.name)
    )
