"""The orchestrator: runs a plan's stages in order. Read `run()` top to bottom for the pipeline.

Settings are the frozen `Plan`; what the stages learn on the way (image ids, digests, the QEMU
version) lives in the small mutable `RunState`.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder import (
    archives,
    baseimage,
    image,
    msifix,
    patches,
    provenance,
    services,
    sources,
    steps,
    toolchain,
    windows,
)
from builder.cache import Cache
from builder.checksums import format_sha256sums, parse_sha256sums, sha256_file
from builder.elfcheck import ElfFormatError, read_elf
from builder.engine import LABEL_RECIPE, BuildContainer, Engine
from builder.errors import ArtifactError, PatchError, StepError, VmTestError
from builder.layout import Layout, Variation
from builder.log import Progress, StepOutput, get_logger
from builder.manifest import (
    LOGS_DIR,
    MANIFEST_NAME,
    SUMS_NAME,
    Artifact,
    build_manifest,
    write_json,
)
from builder.output import OutputDir
from builder.plan import BUILD_USER, ArtifactPlan, Plan
from builder.sources import PreparedSource

STAGES = (
    "source",
    "patches",
    "base-image",
    "build-image",
    "toolchain",
    "unpack",
    "patch",
    "configure",
    "compile",
    "install",
    "collect",
    "verify",
    "vm-test",
    "publish",
)


def preflight(plan: Plan) -> None:
    """Fail in a second, not after the compile, when a host tool the run will need is missing."""
    if plan.vm_test:
        from builder.vm import qemu_binary

        qemu_binary()
    if any(artifact.kind == "msi" for artifact in plan.artifacts):
        from builder.wine import wine_binary

        wine_binary()


def stages_for(plan: Plan) -> tuple[str, ...]:
    """The stages a plan runs, in order (vm-test only when the recipe asks for it)."""
    return tuple(stage for stage in STAGES if stage != "vm-test" or plan.vm_test)


BUILD_UID = 10001  # the Dockerfiles' `builder` user


@dataclass
class RunState:
    started: datetime
    variation: Variation
    layout: Layout
    source: PreparedSource | None = None
    checked_patches: list[patches.CheckedPatch] = field(default_factory=list)
    base: baseimage.BaseImage | None = None
    build_image: image.BuildImage | None = None
    source_date_epoch: int = 0
    source_date_epoch_origin: str = ""
    qemu_version: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    package_format: str = "deb"
    artifacts: list[Artifact] = field(default_factory=list)
    vm_report: dict[str, Any] | None = None
    msi_contents: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    output_dir: Path
    artifacts: list[Artifact]
    manifest: dict[str, Any]
    log_dir: Path


def run(
    plan: Plan,
    engine: Engine,
    cache: Cache,
    recipe_text: str,
    variation: Variation | None = None,
    run_id: str | None = None,
) -> RunResult:
    run_id = run_id or engine.run_id
    log_dir = cache.runs / f"{plan.recipe_name}-{run_id}"
    progress = Progress(total=len(stages_for(plan)), log_dir=log_dir)
    variation = variation or Variation.for_run(run_id)
    state = RunState(started=datetime.now(UTC), variation=variation, layout=Layout(variation.root))
    log = get_logger(recipe=plan.recipe_name, run=run_id)
    log.info("run started", output=str(plan.output_dir), logs=str(log_dir))
    with OutputDir(plan.output_dir, run_id, log=lambda line: log.info(line)) as out:
        try:
            preflight(plan)
            with progress.step("source") as output:
                state.source = sources.prepare_source(plan.source, cache, output.line)
                _choose_source_date_epoch(plan, state, output)
            with progress.step("patches") as output:
                state.checked_patches = patches.check_patches(plan.patches)
                for checked in state.checked_patches:
                    output.line(f"{checked.plan.name} sha256:{checked.plan.sha256} ok")
            with progress.step("base-image") as output:
                state.base = baseimage.ensure_base(engine, plan.image.base, cache, output.line)
            with progress.step("build-image") as output:
                state.build_image = image.ensure_build_image(
                    engine, plan.image, state.base.image_id, plan.recipe_name, cache, output
                )
            with build_container(
                engine, plan, state.build_image.image_id, hostname=variation.hostname
            ) as box:
                _build_in_container(plan, state, box, progress, out.staging)
            if plan.vm_test:
                with progress.step("vm-test") as output:
                    state.vm_report = _vm_test(plan, out.staging, cache, output)
            with progress.step("publish") as output:
                manifest = _publish(
                    plan, state, engine, progress, out, log_dir, recipe_text, run_id
                )
                output.line(f"published {out.final}")
        finally:
            if state.source is not None:
                state.source.cleanup()
    log.info(
        "run finished",
        output=str(out.final),
        seconds=round((datetime.now(UTC) - state.started).total_seconds(), 1),
    )
    return RunResult(out.final, state.artifacts, manifest, log_dir)


def build_container(
    engine: Engine, plan: Plan, image_id: str, hostname: str | None = None
) -> AbstractContextManager[BuildContainer]:
    """The container every build step runs in: no network, unprivileged, limits from the plan."""
    return engine.container(
        image_id,
        hostname=hostname,
        labels={LABEL_RECIPE: plan.recipe_name},
        user=BUILD_USER,
        network=False,
        memory=plan.memory,
        cpus=plan.cpus,
    )


def toolchain_packages(plan: Plan, engine: Engine, cache: Cache) -> dict[str, str]:
    """The packages of the image a plan builds in (made if missing), for `qga-builder lock`."""
    progress = Progress(total=3)
    with progress.step("base-image", log_output=False) as output:
        base = baseimage.ensure_base(engine, plan.image.base, cache, output.line)
    with progress.step("build-image", log_output=False) as output:
        built = image.ensure_build_image(
            engine, plan.image, base.image_id, plan.recipe_name, cache, output
        )
    with (
        progress.step("toolchain", log_output=False) as output,
        build_container(engine, plan, built.image_id) as box,
    ):
        return read_packages(box, output)[1]


def read_packages(box: BuildContainer, output: StepOutput) -> tuple[str, dict[str, str]]:
    """The build image's package format (deb or rpm) and its packages."""
    listing: list[str] = []
    code = box.run(list(steps.package_inventory().argv), on_line=listing.append)
    if code != 0:
        raise StepError(f"listing the build image's packages failed (exit {code})")
    packages = toolchain.parse_inventory(listing)
    package_format = toolchain.inventory_format(listing)
    output.line(f"{len(packages)} {package_format} packages in the build image")
    return package_format, packages


def _build_in_container(
    plan: Plan, state: RunState, box: BuildContainer, progress: Progress, staging: Path
) -> None:
    with progress.step("toolchain") as output:
        state.package_format, state.packages = read_packages(box, output)
        if plan.locked:
            toolchain.check_lock(plan.lock_path, state.packages)
            output.line(f"packages match {plan.lock_path}")
    env = steps.environment(state.source_date_epoch)
    layout = state.layout
    assert state.source is not None

    def run_step(command: steps.Command, output: StepOutput, step: str) -> list[str]:
        return _exec(box, steps.with_umask(command, state.variation.umask), env, output, step)

    with progress.step("unpack") as output:
        output.line(
            f"build root {layout.root}, hostname {state.variation.hostname}, "
            f"umask {state.variation.umask}"
        )
        run_step(steps.prepare_dirs(layout), output, "unpack")
        archive = archives.tar_single_file(
            state.source.archive, arcname=state.source.archive.name, uid=BUILD_UID, gid=BUILD_UID
        )
        with closing(archive):
            box.put_archive(layout.incoming, archive)
        box.put_files(
            layout.patches,
            {c.container_name: c.data for c in state.checked_patches},
            uid=BUILD_UID,
            gid=BUILD_UID,
        )
        unpacked = run_step(
            steps.unpack(layout, state.source.archive.name, state.source.strip_components),
            output,
            "unpack",
        )
        state.qemu_version = unpacked[-1].strip() if unpacked else ""
        output.line(f"QEMU version {state.qemu_version}")
    with progress.step("patch") as output:
        for checked in state.checked_patches:
            output.line(f"applying {checked.plan.name}")
            command = steps.with_umask(
                steps.apply_patch(layout, checked.container_name), state.variation.umask
            )
            code, lines = _run(box, command, env, output)
            if code != 0:
                raise PatchError(
                    f"patch {checked.plan.path} does not apply to the QEMU {state.qemu_version} "
                    f"source: {patches.describe_failure(lines)}",
                    hint=f"full log: {output.log_path}; the patch must be made for this QEMU "
                    "series",
                )
        if not state.checked_patches:
            output.line("no patches in the recipe")
    with progress.step("configure") as output:
        run_step(steps.configure(layout, plan.configure_flags), output, "configure")
    with progress.step("compile") as output:
        run_step(steps.compile_targets(layout, plan.targets, plan.jobs), output, "compile")
    with progress.step("install") as output:
        run_step(steps.install(layout, plan.artifacts, plan.strip_tool), output, "install")
    with progress.step("collect") as output:
        _collect(plan, state, box, staging, output)
    with progress.step("verify") as output:
        _verify(plan, state, box, staging, run_step, output)


def _run(
    box: BuildContainer, command: steps.Command, env: dict[str, str], output: StepOutput
) -> tuple[int, list[str]]:
    """Run one command; its output goes to the step's log and is also returned."""
    output.line(f"$ {shlex.join(command.argv)}")
    lines: list[str] = []

    def sink(line: str) -> None:
        lines.append(line)
        output.line(line)

    code = box.run(list(command.argv), on_line=sink, env=env, workdir=command.workdir)
    return code, lines


def _exec(
    box: BuildContainer, command: steps.Command, env: dict[str, str], output: StepOutput, step: str
) -> list[str]:
    code, lines = _run(box, command, env, output)
    if code != 0:
        raise StepError(
            f"step {step} failed: {command.argv[0]} exited with {code}\n"
            f"  last {len(output.tail)} lines of its log:\n{output.tail_text()}",
            hint=f"full log: {output.log_path}",
        )
    return lines


def _choose_source_date_epoch(plan: Plan, state: RunState, output: StepOutput) -> None:
    assert state.source is not None
    if plan.source_date_epoch is not None:
        state.source_date_epoch, state.source_date_epoch_origin = plan.source_date_epoch, "recipe"
    else:
        state.source_date_epoch = state.source.newest_mtime
        state.source_date_epoch_origin = "newest file in the source"
    output.line(f"SOURCE_DATE_EPOCH={state.source_date_epoch} ({state.source_date_epoch_origin})")


def _collect(
    plan: Plan, state: RunState, box: BuildContainer, staging: Path, output: StepOutput
) -> None:
    """Copy the artifacts out and check them against the checksums computed inside."""
    landing = staging / ".collect"
    layout = state.layout
    archives.safe_extract(
        box.get_archive(layout.artifacts), landing, what="artifacts from the container"
    )
    sums_dir = staging / ".sums"
    archives.safe_extract(box.get_archive(layout.checksums), sums_dir, what="checksums")
    inside = parse_sha256sums((sums_dir / Path(layout.checksums).name).read_text())
    shutil.rmtree(sums_dir)
    for artifact in plan.artifacts:
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
        state.artifacts.append(
            Artifact(artifact.name, digest, (staging / artifact.name).stat().st_size, artifact.kind)
        )
        output.line(f"{artifact.name}: sha256 {digest} matches the container's")
    shutil.rmtree(landing)


def _verify(
    plan: Plan,
    state: RunState,
    box: BuildContainer,
    staging: Path,
    run_step: Callable[[steps.Command, StepOutput, str], list[str]],
    output: StepOutput,
) -> None:
    for index, artifact in enumerate(plan.artifacts):
        path = staging / artifact.name
        if artifact.kind == "static-elf":
            detail = _verify_static_elf(artifact, path, state, run_step, output)
        elif artifact.kind == "pe":
            detail = windows.check_pe(path, artifact.name).describe()
        elif artifact.kind == "msi":
            codes = msifix.derive_codes(plan.recipe_name, state.qemu_version, plan.cache_key)
            state.msi_contents[artifact.name] = windows.verify_msi(
                artifact,
                staging,
                box,
                state.layout,
                run_step,
                output,
                state.qemu_version,
                codes,
                state.source_date_epoch,
            )
            # Post-processing changed the file: its digest is the published one.
            state.artifacts[index] = Artifact(
                **{
                    **state.artifacts[index].__dict__,
                    "sha256": sha256_file(path),
                    "size": path.stat().st_size,
                }
            )
            detail = f"MSI with {len(state.msi_contents[artifact.name]['files'])} files"
        else:
            continue
        output.line(f"{artifact.name}: {detail}")
        state.artifacts[index] = Artifact(**{**state.artifacts[index].__dict__, "detail": detail})


def _verify_static_elf(
    artifact: ArtifactPlan,
    path: Path,
    state: RunState,
    run_step: Callable[[steps.Command, StepOutput, str], list[str]],
    output: StepOutput,
) -> str:
    try:
        elf = read_elf(path)
    except ElfFormatError as exc:
        raise ArtifactError(f"artifact {artifact.name}: {exc}") from None
    problems = []
    if elf.interpreter:
        problems.append(f"asks for the dynamic loader {elf.interpreter}")
    if elf.needed:
        problems.append(f"needs {len(elf.needed)} shared libraries")
    if artifact.strip and not elf.is_stripped:
        problems.append("is not stripped")
    if problems:
        raise ArtifactError(f"artifact {artifact.name} {' and '.join(problems)}")
    printed = "".join(run_step(steps.version(state.layout, artifact.name), output, "verify"))
    if state.qemu_version not in printed:
        raise ArtifactError(
            f"artifact {artifact.name} --version printed {printed!r}, "
            f"expected QEMU version {state.qemu_version}"
        )
    return elf.describe()


def _vm_test(plan: Plan, staging: Path, cache: Cache, output: StepOutput) -> dict[str, Any]:
    from builder.vmtest import run_vm_test

    agents = [a for a in plan.artifacts if a.kind == "static-elf"]
    if not agents:
        raise VmTestError("vm_test: the recipe has no static-elf artifact to boot")
    report = run_vm_test(staging / agents[0].name, cache, output.line)
    if not report.passed:
        failed = ", ".join(s.name for s in report.scenarios if not s.passed)
        raise VmTestError(
            f"the agent failed in the VM: {failed}", hint=f"full log: {output.log_path}"
        )
    return report.as_dict()


def _publish(
    plan: Plan,
    state: RunState,
    engine: Engine,
    progress: Progress,
    out: OutputDir,
    log_dir: Path,
    recipe_text: str,
    run_id: str,
) -> dict[str, Any]:
    staging = out.staging
    for name, (content, mode) in services.render_services(
        plan.service_kinds, plan.service_exec_path
    ).items():
        path = staging / name
        path.write_bytes(content)
        path.chmod(mode)
        state.artifacts.append(Artifact(name, sha256_file(path), len(content), "service"))
    sums = {artifact.name: artifact.sha256 for artifact in state.artifacts}
    (staging / SUMS_NAME).write_text(format_sha256sums(sums))
    assert state.source and state.base and state.build_image
    manifest = build_manifest(
        plan_summary={**plan.summary(), "cache_key": plan.cache_key},
        recipe_text=recipe_text,
        source=state.source.record,
        patches=[
            {"name": c.plan.name, "path": str(c.plan.path), "sha256": c.plan.sha256}
            for c in state.checked_patches
        ],
        base={**state.base.record, "image_id": state.base.image_id},
        image={
            "tag": state.build_image.tag,
            "id": state.build_image.image_id,
            "inputs_hash": state.build_image.inputs_hash,
            "reused": state.build_image.reused,
            "dockerfile": str(plan.image.dockerfile),
            "dockerfile_sha256": plan.image.dockerfile_sha256,
            "build_args": dict(plan.image.build_args),
        },
        packages=state.packages,
        package_format=state.package_format,
        configure_line=shlex.join(
            ["configure", *plan.configure_flags, *state.layout.prefix_map_flags()]
        ),
        source_date_epoch=state.source_date_epoch,
        source_date_epoch_origin=state.source_date_epoch_origin,
        qemu_version=state.qemu_version,
        artifacts=state.artifacts,
        timings=progress.timings,
        started=state.started,
        finished=datetime.now(UTC),
        docker_server=str(engine.api.version().get("Version", "")),
    )
    if state.vm_report is not None:
        manifest["vm_test"] = state.vm_report
    if state.msi_contents:
        manifest["msi_contents"] = state.msi_contents
    write_json(staging / MANIFEST_NAME, manifest)
    write_json(staging / provenance.PROVENANCE_NAME, provenance.statement(manifest, run_id))
    shutil.copytree(log_dir, staging / LOGS_DIR, dirs_exist_ok=True)
    out.publish()
    return manifest


def read_manifest(output_dir: Path) -> dict[str, Any]:
    return dict(json.loads((output_dir / MANIFEST_NAME).read_text()))
