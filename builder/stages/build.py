"""Stages in the build container: unpack the source, configure, compile, install.

Each is one command (see `container_commands`) run with the run's umask and environment; a
non-zero exit stops the run with the command's last lines and its log's path.
"""

from __future__ import annotations

from contextlib import closing

from builder.boxes import container_commands
from builder.caches import configure_cache
from builder.config.layout import BUILD_UID
from builder.errors import InputError
from builder.formats import archives
from builder.log import StepOutput
from builder.run_context import RunContext
from builder.stages import package, patches


def unpack(ctx: RunContext, output: StepOutput) -> None:
    """Stage `unpack`: copy the checked source archive and patches in, extract, read VERSION."""
    layout, source = ctx.layout, ctx.source
    output.line(
        f"build root {layout.root}, hostname {ctx.variation.hostname}, umask {ctx.variation.umask}"
    )
    ctx.run_step(container_commands.prepare_dirs(layout), output)
    archive, sent_digest = archives.tar_single_file(
        source.archive, arcname=source.archive.name, uid=BUILD_UID, gid=BUILD_UID
    )
    with closing(archive):
        if sent_digest != source.sha256:
            raise InputError(
                f"source: {source.archive} changed after it was checked "
                f"(sha256 {sent_digest}, checked {source.sha256}); refusing to build it",
                hint="something replaced the file during the run; run again",
            )
        ctx.container.put_archive(layout.incoming, archive)
    patches.send(ctx)
    unpacked = ctx.run_step(
        container_commands.unpack(layout, source.archive.name, source.strip_components), output
    )
    ctx.qemu_version = unpacked[-1].strip() if unpacked else ""
    if ctx.plan.package is not None:  # a package version made from it: checked before the compile
        package.package_spec(ctx.plan, ctx.qemu_version, ctx.source_date_epoch, ctx.fsfreeze_hook)
    output.line(f"QEMU version {ctx.qemu_version}")


def configure(ctx: RunContext, output: StepOutput) -> None:
    """Stage `configure`: QEMU's configure, or the tree it made for the same inputs before."""
    if ctx.ccache is not None:  # counts from here are this run's (when no other shares it)
        ctx.run_command(container_commands.ccache_stats(zero=True), output)
    key = configure_cache.key_for(ctx) if configure_cache.applies(ctx) else None
    if key is not None:
        ctx.configure_reuse = configure_cache.restore(ctx, key, output)
        if ctx.configure_reuse["reused"]:
            return
        output.line(f"configure: {ctx.configure_reuse['reason']} ({key[:16]})")
    ctx.run_step(container_commands.configure(ctx.layout, ctx.configure_flags), output)
    if key is not None:
        configure_cache.store(ctx, key, output)


def compile_targets(ctx: RunContext, output: StepOutput) -> None:
    command = container_commands.compile_targets(ctx.layout, ctx.plan.targets, ctx.plan.jobs)
    ctx.run_step(command, output)
    if ctx.ccache is not None:
        _, stats = ctx.run_command(container_commands.ccache_stats(zero=False), output)
        ctx.ccache |= ccache_counts(stats)  # counters are a record, never a reason to fail
        output.line(f"compiler cache: {ctx.ccache['hits']} hits, {ctx.ccache['misses']} misses")


def ccache_counts(lines: list[str]) -> dict[str, int]:
    """Hits and misses from `ccache --print-stats` (tab-separated counters, ccache 4)."""
    counters: dict[str, int] = {}
    for line in lines:
        name, _, value = line.partition("\t")
        if value.strip().isdigit():
            counters[name.strip()] = int(value)
    hits = counters.get("direct_cache_hit", 0) + counters.get("preprocessed_cache_hit", 0)
    return {"hits": hits, "misses": counters.get("cache_miss", 0)}


def install(ctx: RunContext, output: StepOutput) -> None:
    """Stage `install`: artifacts to their final names, stripped, checksummed inside."""
    command = container_commands.install(ctx.layout, ctx.artifact_plans, ctx.plan.strip_tool)
    ctx.run_step(command, output)
