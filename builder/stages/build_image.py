"""Stage: make sure the build image exists, reusing one whose inputs are unchanged.

The tag and the `org.qga-builder.inputs` label carry a hash of every input (Dockerfile bytes,
build args, base reference and the base's image id), so a changed input makes a new image and an
unchanged one is never rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from builder.caches.image_transfer import copy_from_peers
from builder.config.plan import ImagePlan
from builder.engine import LABEL_BASE, LABEL_INPUTS, LABEL_KIND, LABEL_RECIPE
from builder.errors import ImageError, InputError
from builder.formats.checksums import sha256_bytes
from builder.host.cache import Cache
from builder.host.locks import exclusive
from builder.log import StepOutput
from builder.run_context import ContainerEngine, RunContext


def _checked_dockerfile(plan: ImagePlan) -> bytes:
    """The Dockerfile's bytes, read once and checked against the digest the plan hashed."""
    data = plan.dockerfile.read_bytes()
    if sha256_bytes(data) != plan.dockerfile_sha256:
        raise InputError(
            f"environment.dockerfile: {plan.dockerfile} changed after the run was planned; "
            "refusing to build from it",
            hint="something replaced the file during the run; run again",
        )
    return data


@dataclass(frozen=True)
class BuildImage:
    tag: str
    image_id: str
    inputs_hash: str
    reused: bool


def ensure(ctx: RunContext, output: StepOutput) -> None:
    """Stage `build-image`."""
    ctx.build_image = ensure_build_image(
        ctx.engine,
        ctx.image_plan,
        ctx.base.image_id,
        ctx.plan.recipe_name,
        ctx.cache,
        output,
        peers=ctx.peer_engines,
    )


def ensure_build_image(
    engine: ContainerEngine,
    plan: ImagePlan,
    base_image_id: str,
    recipe_name: str,
    cache: Cache,
    output: StepOutput,
    *,
    peers: Sequence[ContainerEngine] = (),
    fresh: bool = False,
) -> BuildImage:
    """The build image on `engine`: present, copied from one of `peers`, or built. `fresh`:
    built anew with no cached layer, whatever is present (`bump --write` remaking a lock's
    image so it takes the suite's library updates)."""
    tag = plan.tag(base_image_id)
    inputs_hash = plan.final_hash(base_image_id)
    with exclusive(cache.lock_path(f"image-{inputs_hash[:16]}"), f"image {tag}", output.line):
        existing = engine.inspect_image(tag)
        if fresh:
            return _build(engine, plan, base_image_id, recipe_name, tag, inputs_hash, output, True)
        if existing is None or existing.labels.get(LABEL_INPUTS) != inputs_hash:
            copy_from_peers(
                engine, peers, tag, label=LABEL_INPUTS, value=inputs_hash, log=output.line
            )
        return _reuse_or_build(engine, plan, base_image_id, recipe_name, tag, inputs_hash, output)


def _reuse_or_build(
    engine: ContainerEngine,
    plan: ImagePlan,
    base_image_id: str,
    recipe_name: str,
    tag: str,
    inputs_hash: str,
    output: StepOutput,
) -> BuildImage:
    existing = engine.inspect_image(tag)
    if existing is not None and existing.labels.get(LABEL_INPUTS) == inputs_hash:
        output.line(f"reusing {tag}: Dockerfile, build args and base are unchanged")
        return BuildImage(tag, existing.id, inputs_hash, reused=True)
    return _build(engine, plan, base_image_id, recipe_name, tag, inputs_hash, output, False)


def _build(
    engine: ContainerEngine,
    plan: ImagePlan,
    base_image_id: str,
    recipe_name: str,
    tag: str,
    inputs_hash: str,
    output: StepOutput,
    fresh: bool,
) -> BuildImage:
    anew = " anew, no cached layer" if fresh else ""
    output.line(f"building {tag} from {plan.dockerfile.name}{anew}")
    try:
        image_id = engine.build_image(
            _checked_dockerfile(plan),
            tag,
            build_args={**dict(plan.build_args), "BASE_IMAGE": base_image_id},
            labels={
                LABEL_INPUTS: inputs_hash,
                LABEL_RECIPE: recipe_name,
                LABEL_KIND: "build",
                LABEL_BASE: base_image_id,
            },
            on_line=output.line,
            fresh=fresh,
        )
    except ImageError as exc:
        raise ImageError(
            f"{exc.message} ({plan.dockerfile.name})\n  last lines of the image build:\n"
            f"{output.tail_text(skip_blank=True)}",
            hint=exc.hint,
        ) from None
    return BuildImage(tag, image_id, inputs_hash, reused=False)
