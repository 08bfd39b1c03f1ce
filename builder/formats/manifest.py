"""manifest.json: every input of a run and every output, for whoever ships the artifacts."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder import __version__

MANIFEST_NAME = "manifest.json"
SUMS_NAME = "SHA256SUMS"
SIGNATURE_NAME = "SHA256SUMS.asc"  # an armored detached OpenPGP signature of SHA256SUMS
LOGS_DIR = "logs"
MANIFEST_SCHEMA = "https://qga-builder.invalid/manifest/v1"


@dataclass(frozen=True)
class Artifact:
    name: str
    sha256: str
    size: int
    kind: str
    detail: str = ""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_manifest(
    *,
    plan_summary: dict[str, Any],
    recipe_text: str,
    source: dict[str, Any],
    patches: list[dict[str, Any]],
    base: dict[str, Any],
    image: dict[str, Any],
    distribution: str,
    packages: dict[str, str],
    package_format: str,
    configure_line: str,
    source_date_epoch: int,
    source_date_epoch_origin: str,
    qemu_version: str,
    artifacts: list[Artifact],
    timings: dict[str, float],
    started: datetime,
    finished: datetime,
    docker_server: str,
) -> dict[str, Any]:
    return {
        "schema": MANIFEST_SCHEMA,
        "tool": {"name": "qga-builder", "version": __version__},
        "recipe": {
            "name": plan_summary["recipe_name"],
            "path": plan_summary["recipe_path"],
            "sha256": plan_summary["recipe_sha256"],
            "text": recipe_text,
            "overrides": plan_summary["overrides"],
        },
        "cache_key": plan_summary["cache_key"],
        "qemu_version": qemu_version,
        "target": plan_summary["target"],  # linux or windows
        "architecture": plan_summary["architecture"],
        "source": source,
        "patches": patches,
        "environment": {
            "base": base,
            "image": image,
            "distribution": distribution,
            "packages": packages,
            "package_format": package_format,
        },
        "build": {
            "configure": configure_line,
            "targets": plan_summary["targets"],
            "source_date_epoch": source_date_epoch,
            "source_date_epoch_from": source_date_epoch_origin,
        },
        "artifacts": [artifact.__dict__ for artifact in artifacts],
        "timings_seconds": timings,
        "started": iso(started),
        "finished": iso(finished),
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "docker_server": docker_server,
        },
    }


def write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n", encoding="utf-8")
