"""Stage `collect`: copy the artifacts out of the container and check each against the sha256
computed inside it, so a copy that changed a byte never becomes a release."""

from __future__ import annotations

import shutil
from pathlib import Path

from builder.errors import ArtifactError
from builder.formats import archives
from builder.formats.checksums import parse_sha256sums, sha256_file
from builder.formats.manifest import Artifact
from builder.log import StepOutput
from builder.run_context import RunContext


def collect(ctx: RunContext, output: StepOutput) -> None:
    staging, layout = ctx.staging, ctx.layout
    landing = staging / ".collect"
    count = len(ctx.artifact_plans)
    archives.safe_extract(
        ctx.container.get_archive(layout.artifacts),
        landing,
        what="artifacts from the container",
        limits=archives.Limits(
            max_bytes=count * ctx.plan.max_artifact_bytes, max_members=count + 1
        ),
    )
    sums_dir = staging / ".sums"
    archives.safe_extract(
        ctx.container.get_archive(layout.checksums),
        sums_dir,
        what="checksums",
        limits=archives.Limits(max_bytes=1 << 20, max_members=1),
    )
    inside = parse_sha256sums((sums_dir / Path(layout.checksums).name).read_text())
    shutil.rmtree(sums_dir)
    for artifact in ctx.artifact_plans:
        copied = landing / "artifacts" / artifact.name
        if not copied.is_file():
            raise ArtifactError(f"artifact {artifact.name} ({artifact.path}) was not produced")
        digest = sha256_file(copied)
        if inside.get(artifact.name) != digest:
            raise ArtifactError(
                f"artifact {artifact.name}: sha256 after copying out ({digest}) differs from the "
                f"one computed in the container ({inside.get(artifact.name)})"
            )
        copied.rename(staging / artifact.name)
        size = (staging / artifact.name).stat().st_size
        ctx.artifacts.append(Artifact(artifact.name, digest, size, artifact.kind))
        output.line(f"{artifact.name}: sha256 {digest} matches the container's")
    shutil.rmtree(landing)
