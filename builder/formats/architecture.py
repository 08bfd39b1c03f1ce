"""The machine the artifacts are built for, named in one place: manifest.json and release.json
record it, and the packages are named from it. Only x86_64 for now (aarch64 comes later)."""

from __future__ import annotations

ARCHITECTURE = "x86_64"  # as `uname -m`, RPM and the tarball's name say it
DEBIAN_ARCHITECTURE = "amd64"  # Debian's name for the same machine
