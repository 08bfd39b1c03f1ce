"""The build container: where every in-container stage runs, and its build-cache volume."""

from __future__ import annotations

from contextlib import AbstractContextManager

from builder.boxes.container_commands import CCACHE_DIR
from builder.config.layout import BUILD_UID, BUILD_USER
from builder.config.plan import Plan
from builder.engine import DEFAULT_MEMORY, LABEL_IMAGE, LABEL_KIND, LABEL_RECIPE
from builder.run_context import Container, ContainerEngine

BUILD_CACHE = "build-cache"  # the kind label of a cache volume


def ccache_volume(image_id: str) -> str:
    """One build cache (ccache's objects, configured trees) per build image: never another
    toolchain's."""
    return f"qga-ccache-{image_id.removeprefix('sha256:')[:16]}"


def scratch_options(plan: Plan) -> str:
    # Bounded by the container's memory limit too (tmpfs pages are charged to it).
    size = plan.memory or DEFAULT_MEMORY
    return f"exec,nosuid,nodev,uid={BUILD_UID},gid={BUILD_UID},mode=0755,size={size}"


def build_container(
    engine: ContainerEngine,
    plan: Plan,
    image_id: str,
    hostname: str | None = None,
    cache_volume: bool = False,
    scratch: str | None = None,
) -> AbstractContextManager[Container]:
    """The container every build step runs in: no network, unprivileged, limits from the plan;
    with `cache_volume`, the build image's cache volume (made labelled, so `clean` can prove it
    is the tool's) at /ccache; with `scratch`, a tmpfs there for the source and build trees,
    owned by the build user, executable (configure and the build's own tools run from it)."""
    volumes = None
    if cache_volume:
        name = ccache_volume(image_id)
        engine.ensure_volume(name, {LABEL_KIND: BUILD_CACHE, LABEL_IMAGE: image_id})
        volumes = {name: CCACHE_DIR}
    return engine.container(
        image_id,
        hostname=hostname,
        volumes=volumes,
        tmpfs={scratch: scratch_options(plan)} if scratch else None,
        labels={LABEL_RECIPE: plan.recipe_name},
        user=BUILD_USER,
        network=False,
        memory=plan.memory,
        cpus=plan.cpus,
    )
