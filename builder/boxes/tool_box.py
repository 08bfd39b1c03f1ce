"""The tool's own boxes (the wine box, the packager box): an image made from Debian trixie's
debootstrap base with a few Debian packages, reused by a digest of its inputs, and a container
from it that is offline, unprivileged and labelled like every container of the tool."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from builder.config.layout import BUILD_USER
from builder.config.plan import BasePlan, ImagePlan
from builder.engine import LABEL_RECIPE
from builder.formats.checksums import sha256_bytes, sha256_json
from builder.host.cache import Cache
from builder.log import StepOutput
from builder.run_context import Container, ContainerEngine
from builder.stages.base_image import ensure_base
from builder.stages.build_image import BuildImage, ensure_build_image

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TRIXIE = BasePlan(
    kind="debootstrap",
    reference="qga-builder/base:trixie-minbase",
    suite="trixie",
    variant="minbase",
)


@dataclass(frozen=True)
class ToolBox:
    name: str  # the image is qga-builder/NAME, its containers are labelled with NAME
    dockerfile: Path
    packages: tuple[str, ...]
    memory: str
    extra_args: tuple[tuple[str, str], ...] = ()  # more build args (the guest's INIT)

    def image_plan(self) -> ImagePlan:
        digest = sha256_bytes(self.dockerfile.read_bytes())
        build_args = (("PACKAGES", " ".join(self.packages)), *self.extra_args)
        inputs = {"dockerfile": digest, "base": TRIXIE.reference, "build_args": build_args}
        return ImagePlan(
            dockerfile=self.dockerfile,
            dockerfile_sha256=digest,
            base=TRIXIE,
            build_args=build_args,
            repository=f"qga-builder/{self.name}",
            inputs_hash=sha256_json(inputs),
        )

    def image(self, engine: ContainerEngine, cache: Cache, output: StepOutput) -> BuildImage:
        """The image, made if missing (and its debootstrapped base)."""
        base = ensure_base(engine, TRIXIE, cache, output.line)
        return ensure_build_image(
            engine, self.image_plan(), base.image_id, self.name, cache, output
        )

    def open(
        self, engine: ContainerEngine, cache: Cache, output: StepOutput
    ) -> AbstractContextManager[Container]:
        """The image (made if missing) and a fresh container from it."""
        image = self.image(engine, cache, output)
        return engine.container(
            image.image_id,
            labels={LABEL_RECIPE: self.name},
            user=BUILD_USER,
            network=False,
            memory=self.memory,
        )
