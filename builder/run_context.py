"""What the stages share: the frozen plan (settings) and a small mutable context (what the stages
learn on the way: digests, image ids, the QEMU version, the artifacts).

Stages talk to Docker only through the two Protocols below, so the orchestrator can be driven
by a fake container in unit tests; `builder.engine` provides the real ones.
"""

from __future__ import annotations

import shlex
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from builder.boxes import container_commands
from builder.config.layout import Layout, Variation
from builder.config.plan import ArtifactPlan, ImagePlan, PatchPlan, Plan
from builder.engine import ImageRecord
from builder.errors import StepError
from builder.formats.manifest import Artifact
from builder.host.attestation_keys import AttestationSigner
from builder.host.authenticode import AuthenticodeSigner
from builder.host.cache import Cache
from builder.host.openpgp import Signer
from builder.log import LineSink, Progress, StepOutput
from builder.outputs.output_dir import OutputDir

if TYPE_CHECKING:  # the stages' own records (those modules import this one)
    from builder.stages.artifact_cache import CacheHit
    from builder.stages.base_image import BaseImage
    from builder.stages.build_image import BuildImage
    from builder.stages.patches import CheckedPatch
    from builder.stages.sbom import LinkInventory
    from builder.stages.source import PreparedSource

KEPT_LINES = 2000  # of a command's output, in memory (the step log has all of it)


class Container(Protocol):
    """One running build container (`builder.engine.BuildContainer`)."""

    id: str
    name: str

    def put_archive(self, dest: str, archive: IO[bytes] | bytes) -> None: ...

    def put_files(self, dest: str, files: Mapping[str, bytes], *, uid: int, gid: int) -> None: ...

    def get_archive(self, path: str) -> Iterable[bytes]: ...

    def run(
        self,
        command: list[str],
        *,
        on_line: LineSink,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        step: str = "",
    ) -> int: ...


class ContainerEngine(Protocol):
    """What the stages need of a Docker engine (`builder.engine.Engine`)."""

    run_id: str
    endpoint: str  # as the user named it, credentials masked (recorded: which engine built what)

    def image_id(self, reference: str) -> str | None: ...

    def inspect_image(self, reference: str) -> ImageRecord | None: ...

    def pull(self, reference: str) -> str: ...

    def build_image(
        self,
        dockerfile: bytes,
        tag: str,
        *,
        build_args: Mapping[str, str],
        labels: Mapping[str, str],
        on_line: LineSink,
        fresh: bool = False,
    ) -> str: ...

    def import_rootfs(
        self, tar_stream: IO[bytes], reference: str, labels: Mapping[str, str]
    ) -> str: ...

    def container(
        self,
        image: str,
        *,
        labels: Mapping[str, str],
        user: str,
        network: bool = False,
        memory: str | None = None,
        cpus: float | None = None,
        workdir: str = "/",
        hostname: str | None = None,
        volumes: Mapping[str, str] | None = None,
        tmpfs: Mapping[str, str] | None = None,
        cap_add: tuple[str, ...] = (),
    ) -> AbstractContextManager[Container]: ...

    def server_version(self) -> str: ...

    def describe(self) -> dict[str, str | None]: ...

    def save_image(self, reference: str) -> Iterator[bytes]: ...

    def load_image(self, tar_stream: Iterable[bytes], reference: str) -> str: ...

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None: ...


@dataclass
class RunContext:
    plan: Plan
    engine: ContainerEngine
    cache: Cache
    recipe_text: str
    run_id: str
    variation: Variation
    out: OutputDir
    progress: Progress
    log_dir: Path
    started: datetime
    box: Container | None = None
    # The run's other engines (a matrix): images they hold are copied, not made again.
    peer_engines: tuple[ContainerEngine, ...] = ()
    use_cache: bool = True  # the artifact cache (`--no-cache` turns it off)
    use_ccache: bool = True  # the compiler cache volume (`--no-ccache` turns it off)
    # Signs SHA256SUMS at publish (`--signing-key`); checked before the run. Not in the plan:
    # whether and by whom a run is signed changes no artifact and no cache key.
    signer: Signer | None = None
    # Signs the provenance into a DSSE envelope (`--attestation-key`); the same: not in the plan.
    attester: AttestationSigner | None = None
    # Signs the Windows files (`--authenticode-pfx`, a PKCS#11 key): it changes the artifacts,
    # so the artifact cache key holds its certificate (stages.artifact_cache).
    code_signer: AuthenticodeSigner | None = None
    ccache: dict[str, Any] | None = None  # set when the build image can use the volume
    configure_reuse: dict[str, Any] | None = None  # stages.configure_cache: key, reused, why
    # Learned by the stages, in order:
    source: PreparedSource = None  # type: ignore[assignment]  # stage source
    source_date_epoch: int = 0
    source_date_epoch_origin: str = ""
    checked_patches: list[CheckedPatch] = field(default_factory=list)  # stage patches
    base: BaseImage = None  # type: ignore[assignment]  # stage base-image
    build_image: BuildImage = None  # type: ignore[assignment]  # stage build-image
    distribution: str = "unknown"  # the build image's os-release PRETTY_NAME
    packages: dict[str, str] = field(default_factory=dict)
    package_format: str = "deb"
    qemu_version: str = ""
    artifacts: list[Artifact] = field(default_factory=list)
    msi_contents: dict[str, dict[str, Any]] = field(default_factory=dict)
    built_product_codes: dict[str, str] = field(default_factory=dict)  # MSI name -> wixl's
    fsfreeze_hook: str = ""  # stage patches: QEMU's hook script, the run's patches applied
    agent_paths: dict[str, str] = field(default_factory=dict)  # stage check: `qemu-ga -D`
    vm_report: dict[str, Any] | None = None
    link_inventory: LinkInventory | None = None  # stage link-map: what the SBOM describes
    authenticode: dict[str, Any] | None = None  # stage authenticode: signer, digests before
    sbom_sha256: str = ""  # stage publish: sbom.spdx.json, when there is one
    cache_hit: CacheHit | None = None  # stage reuse: the build stages are skipped
    cache_record: dict[str, Any] = field(default_factory=dict)  # hit or miss, and why
    manifest: dict[str, Any] = field(default_factory=dict)

    # What the run builds is the plan's, resolved once by stage `series` (ctx.plan is the
    # resolved plan from there on); these read it.
    @property
    def image_plan(self) -> ImagePlan:
        return self.plan.image

    @property
    def patch_plans(self) -> tuple[PatchPlan, ...]:
        return self.plan.patches

    @property
    def configure_flags(self) -> tuple[str, ...]:
        return self.plan.configure_flags

    @property
    def run_key(self) -> str:
        return self.plan.cache_key

    @property
    def artifact_plans(self) -> tuple[ArtifactPlan, ...]:
        return self.plan.artifacts

    @property
    def series_record(self) -> dict[str, Any]:
        return self.plan.resolution.series if self.plan.resolution is not None else {}

    @property
    def layout(self) -> Layout:
        return Layout(self.variation.root)

    @property
    def staging(self) -> Path:
        return self.out.staging

    @property
    def container(self) -> Container:
        if self.box is None:
            raise AssertionError("this stage runs in the build container, which is not open")
        return self.box

    def step_environment(self) -> dict[str, str]:
        """The environment every build step runs with (and configure's key covers)."""
        env = container_commands.environment(self.source_date_epoch)
        if self.ccache is not None:
            env |= container_commands.ccache_environment()
        return env

    def run_command(
        self, command: container_commands.Command, output: StepOutput
    ) -> tuple[int, list[str]]:
        """Run one command in the build container (umask and environment of the run); its
        output goes to the stage's log and is also returned."""
        command = container_commands.with_umask(command, self.variation.umask)
        output.line(f"$ {shlex.join(command.argv)}")
        lines: deque[str] = deque(maxlen=KEPT_LINES)  # a compile prints much; keep the end

        def sink(line: str) -> None:
            lines.append(line)
            output.line(line)

        code = self.container.run(
            list(command.argv),
            on_line=sink,
            env=self.step_environment(),
            workdir=command.workdir,
            step=command.step,
        )
        return code, list(lines)

    def run_step(self, command: container_commands.Command, output: StepOutput) -> list[str]:
        """Run a command that must succeed; a failure names the stage and shows its tail."""
        code, lines = self.run_command(command, output)
        if code != 0:
            raise StepError(
                f"step {output.name} failed: {command.argv[0]} exited with {code}\n"
                f"  last {len(output.tail)} lines of its log:\n{output.tail_text()}",
                hint=f"full log: {output.log_path}",
            )
        return lines
