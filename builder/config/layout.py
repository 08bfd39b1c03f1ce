"""Where a run's files live inside the build container, and what else varies between runs.

Every run builds under its own root (/work/<run id>), so two builds never share a path by
accident; `-ffile-prefix-map` maps the real source and build paths to fixed ones, which keeps the
root out of the artifacts. `verify` varies the root, hostname and umask on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

# The unprivileged user every Dockerfile makes (`useradd --uid 10001 ... builder`).
BUILD_USER = "builder"
BUILD_UID = 10001

MAPPED_SRC = "/usr/src/qemu"  # where sources appear in debug info and __FILE__ strings
WORK = "/work"  # owned by the build user in every Dockerfile


PLAIN_ROOT = "qemu"  # a plain run's build root, under WORK


@dataclass(frozen=True)
class Variation:
    """What may differ between two builds of one recipe without changing the artifacts."""

    root: str
    hostname: str
    umask: str = "0022"

    @classmethod
    def for_run(cls, run_id: str, *, umask: str = "0022", tag: str = "") -> Variation:
        """A plain run builds at one fixed root (one container per run, so no two meet), which
        lets the compiler cache hit across runs without rewriting paths; `verify`'s tagged
        builds take roots of their own, to prove the artifacts do not depend on it."""
        root = f"{WORK}/{tag}{run_id}" if tag else f"{WORK}/{PLAIN_ROOT}"
        return cls(root=root, hostname=f"qga-{tag}{run_id[:8]}", umask=umask)


@dataclass(frozen=True)
class Layout:
    """`root` holds the source and build trees: a tmpfs of the build container (unpacking 400 MB
    of QEMU, compiling, and removing the container are IO-bound on the engine's disk). Files
    that cross the engine's archive API, which cannot reach into a tmpfs, live beside it in
    `exchange`: the archive and patches sent in, the artifacts and checksums taken out."""

    root: str

    @property
    def exchange(self) -> str:
        return f"{self.root}.io"

    @property
    def src(self) -> str:
        return f"{self.root}/src"

    @property
    def build(self) -> str:
        return f"{self.root}/build"

    @property
    def patches(self) -> str:
        return f"{self.exchange}/patches"

    @property
    def artifacts(self) -> str:
        return f"{self.exchange}/artifacts"

    @property
    def incoming(self) -> str:
        return f"{self.exchange}/in"

    @property
    def checksums(self) -> str:
        return f"{self.exchange}/artifacts.sha256"

    @property
    def inspect(self) -> str:
        """Where the MSI check exports the package's tables and files."""
        return f"{self.exchange}/inspect"

    def prefix_map_flags(self) -> tuple[str, ...]:
        maps = (
            f"-ffile-prefix-map={self.src}={MAPPED_SRC} "
            f"-ffile-prefix-map={self.build}={MAPPED_SRC}/build"
        )
        return (f"--extra-cflags={maps}", f"--extra-cxxflags={maps}")
