"""The orchestrator: a run is the table `STAGES`, run top to bottom.

Settings are the frozen `Plan`; what the stages learn on the way lives in the small mutable
`RunContext`. The same table drives the progress display ("[k/n] name"), the step logs, the
manifest's timings and the `plan` command's stage list. Stages marked `in_container` run in one
build container, made before the first of them and removed after the last.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder.boxes.build_box import build_container
from builder.config.layout import Variation
from builder.config.plan import Plan
from builder.formats import redact
from builder.formats.manifest import Artifact
from builder.host.attestation_keys import AttestationSigner
from builder.host.authenticode import AuthenticodeSigner
from builder.host.cache import Cache
from builder.host.openpgp import Signer
from builder.log import Progress, StepOutput, get_logger
from builder.outputs.output_dir import OutputDir
from builder.run_context import ContainerEngine, RunContext
from builder.stages import (
    artifact_cache,
    authenticode,
    base_image,
    build,
    build_image,
    checks,
    collect,
    msi,
    package,
    patches,
    publish,
    sbom,
    series,
    source,
    toolchain,
    vm_test,
)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunContext, StepOutput], None]
    in_container: bool = False
    applies: Callable[[Plan], bool] = lambda plan: True
    # Skipped when the artifact cache serves the run (its outputs are in the entry).
    builds: bool = False


def _has_msi(plan: Plan) -> bool:
    return any(artifact.kind == "msi" for artifact in plan.artifacts)


STAGES: tuple[Stage, ...] = (
    Stage("source", source.fetch),
    Stage("series", series.resolve),
    Stage("patches", patches.check),
    Stage("base-image", base_image.ensure),
    Stage("build-image", build_image.ensure),
    Stage("reuse", artifact_cache.lookup),
    Stage("toolchain", toolchain.inventory, in_container=True, builds=True),
    Stage("unpack", build.unpack, in_container=True, builds=True),
    Stage("patch", patches.apply, in_container=True, builds=True),
    Stage("configure", build.configure, in_container=True, builds=True),
    Stage("compile", build.compile_targets, in_container=True, builds=True),
    Stage("install", build.install, in_container=True, builds=True),
    Stage("collect", collect.collect, in_container=True, builds=True),
    Stage("check", checks.check, in_container=True, builds=True),
    Stage("link-map", sbom.link_map, in_container=True, builds=True),
    Stage("msi", msi.make_reproducible, applies=_has_msi, builds=True),
    Stage(
        "authenticode",
        authenticode.sign,
        in_container=True,
        builds=True,
        applies=lambda plan: authenticode.applies(plan.artifacts),
    ),
    Stage("package", package.make_packages, applies=lambda p: p.package is not None, builds=True),
    Stage("vm-test", vm_test.boot_and_test, applies=lambda plan: plan.vm_test, builds=True),
    Stage("publish", publish.publish),
)


def stages_for(plan: Plan) -> tuple[Stage, ...]:
    """The stages a plan runs, in order."""
    return tuple(stage for stage in STAGES if stage.applies(plan))


def stage_names(plan: Plan) -> tuple[str, ...]:
    return tuple(stage.name for stage in stages_for(plan))


def preflight(plan: Plan) -> None:
    """Fail in a second, not after the compile, when a host tool the run will need is missing."""
    if plan.vm_test:
        from builder.host.virtual_machine import qemu_binary

        qemu_binary(plan.arch.qemu_system, plan.arch.qemu_system_package)


@dataclass(frozen=True)
class RunResult:
    output_dir: Path
    artifacts: list[Artifact]
    manifest: dict[str, Any]
    log_dir: Path


def run(
    plan: Plan,
    engine: ContainerEngine,
    cache: Cache,
    recipe_text: str,
    variation: Variation | None = None,
    run_id: str | None = None,
    use_cache: bool = True,
    use_ccache: bool = True,
    peer_engines: Sequence[ContainerEngine] = (),
    signer: Signer | None = None,
    attester: AttestationSigner | None = None,
    code_signer: AuthenticodeSigner | None = None,
) -> RunResult:
    run_id = run_id or engine.run_id
    redact.register_build_args(dict(plan.image.build_args))
    stages = stages_for(plan)
    log_dir = cache.runs / f"{plan.recipe_name}-{run_id}"
    log = get_logger(recipe=plan.recipe_name, run=run_id)
    log.info("run started", output=str(plan.output_dir), logs=str(log_dir))
    with OutputDir(plan.output_dir, run_id, log=lambda line: log.info(line)) as out:
        ctx = RunContext(
            plan=plan,
            engine=engine,
            cache=cache,
            recipe_text=recipe_text,
            run_id=run_id,
            variation=variation or Variation.for_run(run_id),
            out=out,
            progress=Progress(total=len(stages), log_dir=log_dir),
            log_dir=log_dir,
            started=datetime.now(UTC),
            use_cache=use_cache,
            use_ccache=use_ccache,
            peer_engines=tuple(peer_engines),
            signer=signer,
            attester=attester,
            code_signer=code_signer,
        )
        try:
            preflight(plan)
            _run_stages(ctx, stages)
        finally:
            if ctx.source is not None:
                ctx.source.cleanup()
    seconds = round((datetime.now(UTC) - ctx.started).total_seconds(), 1)
    log.info("run finished", output=str(out.final), seconds=seconds)
    log.info(f"profile {ctx.progress.profile()}")
    return RunResult(out.final, ctx.artifacts, ctx.manifest, log_dir)


def _run_stages(ctx: RunContext, stages: tuple[Stage, ...]) -> None:
    last_in_container = max((i for i, s in enumerate(stages) if s.in_container), default=-1)
    with ExitStack() as container_scope:
        for index, stage in enumerate(stages):
            if stage.builds and ctx.cache_hit is not None:
                ctx.progress.skip(stage.name, "its result comes from the artifact cache")
                continue
            if stage.in_container and ctx.box is None:
                started, image_id = time.monotonic(), ctx.build_image.image_id
                ctx.box = container_scope.enter_context(
                    build_container(
                        ctx.engine,
                        ctx.plan,
                        image_id,
                        hostname=ctx.variation.hostname,
                        cache_volume=ctx.use_ccache,
                        scratch=ctx.layout.root,
                    )
                )
                ctx.progress.timings["container-start"] = round(time.monotonic() - started, 2)
            with ctx.progress.step(stage.name) as output:
                stage.run(ctx, output)
            if index == last_in_container:
                started = time.monotonic()
                container_scope.close()  # the container goes as soon as no stage needs it
                ctx.box = None
                ctx.progress.timings["container-removal"] = round(time.monotonic() - started, 2)
