"""Command-line overrides, applied to the raw recipe mapping before validation.

Applying them before validation means an override is checked exactly like a recipe field, and the
manifest can record both the recipe as written and what the command line changed.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from builder.errors import UsageError
from builder.formats.checksums import sha256_file

UPSTREAM_GIT_URL = "https://gitlab.com/qemu-project/qemu.git"


@dataclass(frozen=True)
class Overrides:
    qemu_ref: str | None = None
    source: Path | None = None
    base_image: str | None = None
    output: Path | None = None

    def recorded(self) -> dict[str, str]:
        """The overrides that were given, as strings, for the manifest."""
        return {key: str(value) for key, value in asdict(self).items() if value is not None}

    def blame(self) -> dict[str, str]:
        """The recipe fields each given override sets, and its flag: an error in such a field
        is the flag's value, not the recipe file's."""
        fields = {}
        if self.qemu_ref:
            fields["source"] = "--qemu-ref"
        if self.source:
            fields["source"] = "--source"
        if self.base_image:
            fields["environment.base"] = "--base-image"
        return fields


def apply_overrides(data: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    if overrides.qemu_ref and overrides.source:
        raise UsageError("--qemu-ref and --source both choose the source: give one of them")
    result = copy.deepcopy(data)
    if overrides.qemu_ref:
        result["source"] = {"git": {"url": UPSTREAM_GIT_URL, "tag": overrides.qemu_ref}}
    if overrides.source:
        result["source"] = _source_from_path(overrides.source)
    if overrides.base_image:
        environment = result.get("environment")
        if isinstance(environment, dict):
            environment["base"] = {"image": overrides.base_image}
    return result


def _source_from_path(path: Path) -> dict[str, Any]:
    path = path.absolute()
    if path.is_dir():
        return {"local": {"path": str(path)}}
    if path.is_file():
        # The user named this exact file, so its current digest is the pin (and is recorded).
        return {"tarball": {"path": str(path), "sha256": sha256_file(path)}}
    raise UsageError(f"--source {path}: no such file or directory")
