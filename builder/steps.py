"""The commands run inside the build container, one function per step.

Each returns the argv and working directory of one `exec`; the orchestrator runs them in order,
checks the real exit code, and tees the output into the step's log.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from builder.plan import ARTIFACT_DIR, BUILD_DIR, CONTAINER_ROOT, PATCH_DIR, SRC_DIR, ArtifactPlan

SOURCE_ARCHIVE_DIR = f"{CONTAINER_ROOT}/in"
CHECKSUMS_INSIDE = f"{CONTAINER_ROOT}/artifacts.sha256"


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    workdir: str = CONTAINER_ROOT


def environment(source_date_epoch: int) -> dict[str, str]:
    """The same environment for every step: pinned time, locale and zone."""
    return {
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
        "TZ": "UTC",
        "LC_ALL": "C.UTF-8",
        "HOME": "/home/builder",
    }


def _sh(script: str, workdir: str = CONTAINER_ROOT) -> Command:
    return Command(("sh", "-eu", "-c", script), workdir)


def prepare_dirs() -> Command:
    dirs = " ".join((SOURCE_ARCHIVE_DIR, SRC_DIR, BUILD_DIR, PATCH_DIR, ARTIFACT_DIR))
    return _sh(f"mkdir -p {dirs}")


def unpack(archive_name: str, strip_components: int) -> Command:
    archive = shlex.quote(f"{SOURCE_ARCHIVE_DIR}/{archive_name}")
    return _sh(
        f"tar -xf {archive} -C {SRC_DIR} --strip-components={strip_components} --no-same-owner"
        f' && rm -f {archive} && echo "unpacked $(find {SRC_DIR} -type f | wc -l) files"'
        f" && cat {SRC_DIR}/VERSION"
    )


def apply_patch(container_name: str) -> Command:
    return Command(
        (
            "patch",
            "-p1",
            "--forward",
            "--batch",
            "--no-backup-if-mismatch",
            "-i",
            f"{PATCH_DIR}/{container_name}",
        ),
        SRC_DIR,
    )


def configure(flags: Sequence[str]) -> Command:
    return Command((f"{SRC_DIR}/configure", *flags), BUILD_DIR)


def compile_targets(targets: Sequence[str], jobs: int | None) -> Command:
    job_args = ("-j", str(jobs)) if jobs else ()
    return Command(("ninja", "-C", BUILD_DIR, *job_args, *targets), BUILD_DIR)


def install(artifacts: Sequence[ArtifactPlan], strip_tool: str = "strip") -> Command:
    """Copy each artifact to its final name, strip it, and checksum the lot inside the container."""
    lines = []
    for artifact in artifacts:
        src = shlex.quote(f"{BUILD_DIR}/{artifact.path}")
        dest = shlex.quote(f"{ARTIFACT_DIR}/{artifact.name}")
        lines.append(f"install -m 0755 {src} {dest}")
        if artifact.strip:
            lines.append(f"{strip_tool} --strip-all {dest}")
    lines.append(
        f"cd {ARTIFACT_DIR} && sha256sum -- * > {CHECKSUMS_INSIDE} && cat {CHECKSUMS_INSIDE}"
    )
    return _sh("\n".join(lines))


def version(artifact_name: str) -> Command:
    return Command((f"{ARTIFACT_DIR}/{artifact_name}", "--version"))


def package_inventory() -> Command:
    return Command(("dpkg-query", "-W", "-f=${Package}\t${Version}\t${Architecture}\n"))
