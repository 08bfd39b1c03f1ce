"""Where the tool keeps things between runs: fetched sources, apt state, run logs, markers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.config import settings


@dataclass(frozen=True)
class Cache:
    root: Path

    @classmethod
    def default(cls) -> Cache:
        return cls(settings.current().cache_root)

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def sources(self) -> Path:
        return self.dir("sources")

    @property
    def apt(self) -> Path:
        return self.dir("apt")

    @property
    def git(self) -> Path:
        return self.dir("git")

    @property
    def checked(self) -> Path:
        """Markers of archives already inspected, keyed by their sha256."""
        return self.dir("checked")

    @property
    def runs(self) -> Path:
        return self.dir("runs")

    def lock_path(self, key: str) -> Path:
        return self.dir("locks") / f"{key}.lock"
