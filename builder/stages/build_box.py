"""The build container: where every in-container stage runs, and its compiler cache volume."""

from __future__ import annotations

from contextlib import AbstractContextManager

from builder.config.layout import BUILD_USER
from builder.config.plan import Plan
from builder.engine import LABEL_RECIPE
from builder.stages.context import Container, ContainerEngine


def ccache_volume(image_id: str) -> str:
    """One compiler cache per build image: never objects of another toolchain."""
    return f"qga-ccache-{image_id.removeprefix('sha256:')[:16]}"


def build_container(
    engine: ContainerEngine,
    plan: Plan,
    image_id: str,
    hostname: str | None = None,
    volumes: dict[str, str] | None = None,
) -> AbstractContextManager[Container]:
    """The container every build step runs in: no network, unprivileged, limits from the plan."""
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
