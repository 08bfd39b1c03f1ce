"""Host-wide locks, so concurrent runs share work instead of doing it twice (or clobbering it).

A run that needs an image, base or source another run is making waits for it, then finds it
made and reuses it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from builder.host.files import open_lock_file
from builder.log import LineSink


@contextmanager
def exclusive(path: Path, what: str, log: LineSink) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock_file(path)  # never through a planted link
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another run that is making {what}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
