"""The build container: where every in-container stage runs, and its build-cache volume."""

from __future__ import annotations

from contextlib import AbstractContextManager

from builder.config.layout import BUILD_USER
from builder.config.plan import Plan
from builder.engine_records import LABEL_IMAGE, LABEL_KIND, LABEL_RECIPE
from builder.stages.container_commands import CCACHE_DIR
from builder.stages.context import Container, ContainerEngine

BUILD_CACHE = "build-cache"  # the kind label of a cache volume


def ccache_volume(image_id: str) -> str:
    """One build cache (ccache's objects, configured trees) per build image: never another
    toolchain's."""
    return f"qga-ccache-{image_id.removeprefix('sha256:')[:16]}"


def build_container(
    engine: ContainerEngine,
    plan: Plan,
    image_id: str,
    hostname: str | None = None,
    cache_volume: bool = False,
) -> AbstractContextManager[Container]:
    """The container every build step runs in: no network, unprivileged, limits from the plan;
    with `cache_volume`, the build image's cache volume (made labelled, so `clean` can prove it
    is the tool's) at /ccache."""
    volumes = None
    if cache_volume:
        name = ccache_volume(image_id)
        engine.ensure_volume(name, {LABEL_KIND: BUILD_CACHE, LABEL_IMAGE: image_id})
        volumes = {name: CCACHE_DIR}
    return engine.container(
        image_id,
        hostname=hostname,
        volumes=volumes,
        labels={LABEL_RECIPE: plan.recipe_name},
        user=BUILD_USER,
        network=False,
        memory=plan.memory,
        cpus=plan.cpus,
    )
