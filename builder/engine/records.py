"""What the engine answers with: typed records instead of Docker's dicts, and the labels the
tool puts on what it makes. No Docker here: stages and tests use these without an engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

LABEL_TOOL = "org.qga-builder.tool"
LABEL_RUN = "org.qga-builder.run"
LABEL_RECIPE = "org.qga-builder.recipe"
LABEL_INPUTS = "org.qga-builder.inputs"
LABEL_BASE = "org.qga-builder.base"  # the base image id a build image was made from
LABEL_KIND = "org.qga-builder.kind"
LABEL_OWNER = "org.qga-builder.owner"  # host:pid of the process that made a container
LABEL_IMAGE = "org.qga-builder.image"  # the build image id a cache volume serves


@dataclass(frozen=True)
class ImageRecord:
    id: str
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    repo_digests: tuple[str, ...] = ()
    created: int = 0  # seconds since the epoch


@dataclass(frozen=True)
class VolumeRecord:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    command: str = ""
    state: str = ""
    image: str = ""  # the image id it runs


@dataclass(frozen=True)
class ContainerSettings:
    """How a container was made: what the hardening tests check."""

    network_mode: str
    cap_drop: tuple[str, ...]
    cap_add: tuple[str, ...]
    privileged: bool
    security_opt: tuple[str, ...]
    memory: int
    nano_cpus: int
    pids_limit: int | None
    user: str
