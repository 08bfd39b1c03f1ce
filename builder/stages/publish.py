"""Stage `publish`: service files, manifest.json, provenance, the step logs and SHA256SUMS are
written into the staging directory (and, with a signing key, SHA256SUMS.asc: a detached
signature of a SHA256SUMS that then lists every file), which then replaces the output directory
in one step."""

from __future__ import annotations

import shlex
import shutil
from datetime import UTC, datetime

from builder.formats import provenance, redact
from builder.formats.checksums import format_sha256sums, sha256_file
from builder.formats.manifest import (
    LOGS_DIR,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    SUMS_NAME,
    Artifact,
    build_manifest,
    iso,
    write_json,
)
from builder.formats.sbom import SBOM_NAME
from builder.formats.service_files import render_services
from builder.formats.signed_sums import ATTESTATION_NAME, LOG_NAME, RECORD_FILES
from builder.log import StepOutput
from builder.run_context import RunContext
from builder.stages import artifact_cache, sbom


def publish(ctx: RunContext, output: StepOutput) -> None:
    if ctx.cache_hit is not None:
        _publish_cached(ctx, output)
        return
    plan, staging = ctx.plan, ctx.staging
    for name, (content, mode) in render_services(
        plan.service_kinds, plan.service_exec_path
    ).items():
        path = staging / name
        path.write_bytes(content)
        path.chmod(mode)
        ctx.artifacts.append(Artifact(name, sha256_file(path), len(content), "service"))
    if (digest := sbom.write(ctx)) is not None:
        ctx.sbom_sha256 = digest
    ctx.manifest = redact.deep(manifest(ctx))  # no secret leaves in a record
    write_json(staging / MANIFEST_NAME, ctx.manifest)
    write_json(staging / provenance.PROVENANCE_NAME, provenance.statement(ctx.manifest, ctx.run_id))
    shutil.copytree(ctx.log_dir, staging / LOGS_DIR, dirs_exist_ok=True)
    # Kept before signing: a signature that fails at the end (a key ID whose passphrase the
    # user's agent no longer caches after a long build) costs a rerun served from the cache,
    # not the build. The entry is unsigned anyway.
    artifact_cache.store(ctx, staging)
    seal(ctx, output)
    ctx.out.publish()
    output.line(f"published {ctx.out.final}")


def _publish_cached(ctx: RunContext, output: StepOutput) -> None:
    """The entry's artifacts and SHA256SUMS as they are; this run's manifest says where they
    came from (the stored run's manifest, with this run's cache record and times)."""
    hit = ctx.cache_hit
    artifact_cache.restore(ctx)
    ctx.artifacts = [Artifact(**item) for item in hit.manifest.get("artifacts", [])]
    ctx.manifest = {
        **hit.manifest,
        # What it was built for, also when the entry predates these fields (same plan key,
        # same target and machine).
        "target": hit.manifest.get("target", ctx.plan.target),
        "architecture": hit.manifest.get("architecture", ctx.plan.architecture),
        "cache": ctx.cache_record,
        "timings_seconds": ctx.progress.timings,
        "started": iso(ctx.started),
        "finished": iso(datetime.now(UTC)),
    }
    ctx.manifest.pop("signing", None)  # the stored run's signer is not this run's
    if signing := signing_record(ctx):
        ctx.manifest["signing"] = signing
    write_json(ctx.staging / MANIFEST_NAME, ctx.manifest)
    write_json(
        ctx.staging / provenance.PROVENANCE_NAME, provenance.statement(ctx.manifest, ctx.run_id)
    )
    shutil.copytree(ctx.log_dir, ctx.staging / LOGS_DIR, dirs_exist_ok=True)
    seal(ctx, output)
    ctx.out.publish()
    output.line(f"published {ctx.out.final} from the artifact cache (run {hit.from_run})")


def seal(ctx: RunContext, output: StepOutput) -> None:
    """SHA256SUMS: the artifacts' lines (the same bytes signed or not). With a signing key it
    lists every other file of the directory too (manifest, provenance, step logs), and its
    detached signature SHA256SUMS.asc, the last file written, covers them all."""
    staging = ctx.staging
    sums = {artifact.name: artifact.sha256 for artifact in ctx.artifacts}
    if ctx.attester is not None:  # the statement as written, in a DSSE envelope
        envelope = ctx.attester.sign((staging / provenance.PROVENANCE_NAME).read_bytes())
        (staging / ATTESTATION_NAME).write_bytes(envelope.line())
        output.line(f"signed {provenance.PROVENANCE_NAME} into {ATTESTATION_NAME}")
    if ctx.signer is not None:
        for name in (*RECORD_FILES, SBOM_NAME, ATTESTATION_NAME):
            if (staging / name).is_file():  # the envelope only when there is one
                sums[name] = sha256_file(staging / name)
        for log in sorted((staging / LOGS_DIR).iterdir()):
            if LOG_NAME.match(log.name) and log.is_file() and not log.is_symlink():
                sums[f"{LOGS_DIR}/{log.name}"] = sha256_file(log)
    (staging / SUMS_NAME).write_text(format_sha256sums(sums))
    if ctx.signer is not None:
        ctx.signer.sign_file(staging / SUMS_NAME, staging / SIGNATURE_NAME)
        output.line(f"signed {SUMS_NAME} ({len(sums)} files) with {ctx.signer.fingerprint}")


def manifest(ctx: RunContext) -> dict:
    plan = ctx.plan
    result = build_manifest(
        plan_summary={**plan.summary(), "cache_key": ctx.run_key},
        recipe_text=ctx.recipe_text,
        source=ctx.source.record,
        patches=[
            {"name": c.plan.name, "path": str(c.plan.path), "sha256": c.plan.sha256}
            for c in ctx.checked_patches
        ],
        base={**ctx.base.record, "image_id": ctx.base.image_id},
        image={
            "tag": ctx.build_image.tag,
            "id": ctx.build_image.image_id,
            "inputs_hash": ctx.build_image.inputs_hash,
            "reused": ctx.build_image.reused,
            "dockerfile": str(ctx.image_plan.dockerfile),
            "dockerfile_sha256": ctx.image_plan.dockerfile_sha256,
            "build_args": redact.build_args(dict(ctx.image_plan.build_args)),
        },
        distribution=ctx.distribution,
        packages=ctx.packages,
        package_format=ctx.package_format,
        configure_line=shlex.join(
            ["configure", *ctx.configure_flags, *ctx.layout.prefix_map_flags()]
        ),
        source_date_epoch=ctx.source_date_epoch,
        source_date_epoch_origin=ctx.source_date_epoch_origin,
        qemu_version=ctx.qemu_version,
        artifacts=ctx.artifacts,
        timings=ctx.progress.timings,
        started=ctx.started,
        finished=datetime.now(UTC),
        docker_server=ctx.engine.server_version(),
    )
    result["series"] = ctx.series_record
    result["cache"] = ctx.cache_record
    result["host"]["docker_engine"] = ctx.engine.endpoint  # secrets in it are masked below
    result["host"]["docker_daemon"] = ctx.engine.describe()  # how reached, which daemon
    result["build"]["ccache"] = ctx.ccache  # None: not used (--no-ccache, or no ccache there)
    result["build"]["configured_tree"] = ctx.configure_reuse  # None: configure always ran
    if ctx.agent_paths:
        result["agent_paths"] = ctx.agent_paths  # the static agent's built-in paths
    if ctx.vm_report is not None:
        result["vm_test"] = ctx.vm_report
    if ctx.msi_contents:
        result["msi_contents"] = ctx.msi_contents
    if ctx.authenticode is not None:
        result["authenticode"] = ctx.authenticode
    if ctx.sbom_sha256:
        result["sbom"] = {"name": SBOM_NAME, "sha256": ctx.sbom_sha256}
    if signing := signing_record(ctx):
        result["signing"] = signing
    return result


def signing_record(ctx: RunContext) -> dict[str, str]:
    """Who signs this run's output: the keys' public fingerprints, nothing else of them."""
    record = ctx.signer.record() if ctx.signer is not None else {}
    return record | (ctx.attester.record() if ctx.attester is not None else {})
