"""The only package that talks to Docker: one public interface for the rest of the tool.

- `Engine(endpoint)`: connect (unix socket, tcp with verified TLS, ssh through OpenSSH; see
  `endpoints`), then images (inspect, pull, build, import a root file system, save, load,
  remove), containers (`Engine.container` hands out a `BuildContainer` that owns one
  container's whole life), volumes;
- `BuildContainer`: copy files in and out, run commands with their output streamed and their
  real exit code;
- the records the engine answers with, and the labels it puts on what it makes.

Modules: `connection` (docker-py's client and a lost daemon), `engine`, `container`,
`endpoints`, `ssh` (the OpenSSH transport), `records`. Nothing outside this package imports
them directly or imports docker (the layers test checks both).
"""

from builder.engine.container import MAX_LINE_BYTES, BuildContainer
from builder.engine.endpoints import Endpoint, TlsFiles, resolve_endpoint
from builder.engine.engine import DEFAULT_MEMORY, Engine, owner, remove_live_containers
from builder.engine.records import (
    LABEL_BASE,
    LABEL_IMAGE,
    LABEL_INPUTS,
    LABEL_KIND,
    LABEL_OWNER,
    LABEL_RECIPE,
    LABEL_RUN,
    LABEL_TOOL,
    ContainerRecord,
    ContainerSettings,
    ImageRecord,
    VolumeRecord,
)

__all__ = [
    "DEFAULT_MEMORY",
    "LABEL_BASE",
    "LABEL_IMAGE",
    "LABEL_INPUTS",
    "LABEL_KIND",
    "LABEL_OWNER",
    "LABEL_RECIPE",
    "LABEL_RUN",
    "LABEL_TOOL",
    "MAX_LINE_BYTES",
    "BuildContainer",
    "ContainerRecord",
    "ContainerSettings",
    "Endpoint",
    "Engine",
    "ImageRecord",
    "TlsFiles",
    "VolumeRecord",
    "owner",
    "remove_live_containers",
    "resolve_endpoint",
]
