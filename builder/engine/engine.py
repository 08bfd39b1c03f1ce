"""`Engine` connects to a daemon, builds and imports images, answers with typed records, and hands
out `BuildContainer`s, each owning one container's whole life (labelled, removed on every exit
path, Ctrl-C and SIGTERM too): copies in and out, commands streamed with their real exit code.
QGA_BUILDER_KEEP_CONTAINER=1 keeps a failed run's container for debugging.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import tarfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import IO

import docker.errors

from builder import __version__
from builder.config import settings
from builder.engine.connection import CONNECTION_ERRORS, Connection, short
from builder.engine.container import BuildContainer
from builder.engine.endpoints import Endpoint, resolve_endpoint
from builder.engine.records import (
    LABEL_OWNER,
    LABEL_RUN,
    LABEL_TOOL,
    ContainerRecord,
    ContainerSettings,
    ImageRecord,
    VolumeRecord,
)
from builder.errors import DockerUnavailableError, ImageError, Interrupted
from builder.log import LineSink, get_logger

_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")  # docker's own rule for names

# Containers made by this process and not yet removed; cli removes them on exit as a last resort.
_live_containers: dict[str, Engine] = {}


class Engine:
    """A connection to one Docker daemon."""

    def __init__(self, endpoint: str | None = None) -> None:
        """`endpoint`: a URL or docker context name (see `endpoints`); None: DOCKER_HOST."""
        host = settings.current()
        option = "--engine" if endpoint else "DOCKER_HOST"
        self.target: Endpoint = resolve_endpoint(endpoint or host.docker_host, host, option=option)
        self.endpoint = self.target.shown
        self.run_id = uuid.uuid4().hex[:12]
        self.log = get_logger()
        if self.target.kind == "tcp":
            self.log.warning(
                "the Docker engine is reached over plain HTTP: anyone on the way can read and "
                "change the build; set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH",
                engine=self.endpoint,
            )
        try:
            self.connection = Connection(self.target)
        except (docker.errors.DockerException, *CONNECTION_ERRORS) as exc:
            raise DockerUnavailableError(
                f"cannot reach the Docker daemon at {self.endpoint}: {short(exc)}",
                hint="start one with `make setup` (scripts/setup.sh), "
                "or point DOCKER_HOST at a running daemon",
            ) from None
        self.client, self.api = self.connection.client, self.connection.api

    @property
    def lost(self) -> bool:
        """A call found the daemon gone: nothing more waits on it."""
        return self.connection.lost

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def server_version(self) -> str:
        return str(self.connection.call(self.api.version).get("Version", ""))

    def describe(self) -> dict[str, str | None]:
        """The engine for the manifest: as named (credentials masked), how it is reached, and
        which daemon answered."""
        info = self.connection.call(self.api.info)
        return {
            "endpoint": self.target.shown,
            "kind": self.target.kind,
            "context": self.target.context,
            "url": self.target.url_shown,
            "name": str(info.get("Name") or ""),
            "id": str(info.get("ID") or ""),
            "server_version": str(info.get("ServerVersion") or ""),
        }

    # --- images ----------------------------------------------------------------------------

    def inspect_image(self, reference: str) -> ImageRecord | None:
        try:
            info = self.connection.call(self.api.inspect_image, reference)
        except docker.errors.ImageNotFound:
            return None
        return ImageRecord(
            id=str(info["Id"]),
            tags=tuple(info.get("RepoTags") or ()),
            labels=dict((info.get("Config") or {}).get("Labels") or {}),
            repo_digests=tuple(info.get("RepoDigests") or ()),
        )

    def image_id(self, reference: str) -> str | None:
        return record.id if (record := self.inspect_image(reference)) else None

    def pull(self, reference: str) -> str:
        try:
            self.connection.call(self.client.images.pull, reference)
        except docker.errors.APIError as exc:
            raise ImageError(
                f"base image {reference} is not here and cannot be pulled: {short(exc)}",
                hint="without a registry, make a base with `qga-builder base debootstrap` and "
                "pass it with --base-image, or use a recipe whose base is `debootstrap:`",
            ) from None
        image_id = self.image_id(reference)
        assert image_id is not None
        return image_id

    def build_image(
        self,
        dockerfile: bytes,
        tag: str,
        *,
        build_args: Mapping[str, str],
        labels: Mapping[str, str],
        on_line: LineSink,
        fresh: bool = False,
    ) -> str:
        """Build from a context holding only the Dockerfile; stream its log; return the id.
        `fresh`: no layer from the engine's build cache (each RUN again: apt takes the suite's
        packages as they are now)."""
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(dockerfile))
        context.seek(0)
        all_labels = {LABEL_TOOL: __version__, **labels}
        image_id: str | None = None
        try:
            stream = self.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                buildargs=dict(build_args),
                labels=all_labels,
                rm=True,
                forcerm=True,
                pull=False,
                nocache=fresh,
                decode=True,
            )
            partial = ""
            for chunk in stream:
                if "error" in chunk:
                    if partial:
                        on_line(partial)
                    raise ImageError(f"building image {tag} failed: {chunk['error'].strip()}")
                if "stream" in chunk:
                    partial += chunk["stream"]
                    *lines, partial = partial.split("\n")
                    for line in lines:
                        on_line(line)
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
            if partial:
                on_line(partial)
        except docker.errors.APIError as exc:
            raise ImageError(f"building image {tag} failed: {short(exc)}") from None
        except Interrupted:
            # Dropping the connection is what makes the daemon cancel a classic build (and
            # remove its intermediate containers, forcerm).
            self.api.close()
            raise
        except CONNECTION_ERRORS as exc:
            raise self.connection.gone(exc) from None
        return image_id or self.image_id(tag) or ""

    def import_rootfs(
        self, tar_stream: IO[bytes], reference: str, labels: Mapping[str, str]
    ) -> str:
        """`docker import`: make an image from a root file system tarball."""
        repository, _, tag = reference.rpartition(":")
        changes = [f'LABEL {key}="{value}"' for key, value in labels.items()]
        changes.append('CMD ["/bin/bash"]')
        try:
            result = self.api.import_image_from_data(
                tar_stream, repository=repository, tag=tag, changes=changes
            )
        except docker.errors.APIError as exc:
            raise ImageError(f"importing {reference} failed: {short(exc)}") from None
        except CONNECTION_ERRORS as exc:
            raise self.connection.gone(exc) from None
        image_id = self.image_id(reference)
        if image_id is None:
            raise ImageError(f"importing {reference} failed: {str(result)[:200]}")
        return image_id

    def images(self, label: str) -> list[ImageRecord]:
        """Images carrying `label` (a key, or key=value)."""
        return [
            ImageRecord(
                id=str(item["Id"]),
                tags=tuple(tag for tag in item.get("RepoTags") or () if tag != "<none>:<none>"),
                labels=dict(item.get("Labels") or {}),
                repo_digests=tuple(item.get("RepoDigests") or ()),
                created=int(item.get("Created") or 0),
            )
            for item in self.connection.call(self.api.images, filters={"label": label})
        ]

    def save_image(self, reference: str) -> Iterator[bytes]:
        """`docker save`: the image as a tar stream (for `load_image` into another engine)."""
        try:
            yield from self.connection.call(self.api.get_image, reference, chunk_size=1 << 20)
        except docker.errors.APIError as exc:
            raise ImageError(f"saving {reference} failed: {short(exc)}") from None
        except CONNECTION_ERRORS as exc:
            raise self.connection.gone(exc) from None

    def load_image(self, tar_stream: Iterable[bytes], reference: str) -> str:
        """`docker load` of a `save_image` stream; the id `reference` now has here."""
        try:
            for chunk in self.connection.call(self.api.load_image, tar_stream):
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise ImageError(f"loading {reference} failed: {chunk['error'][:300]}")
        except docker.errors.APIError as exc:
            raise ImageError(f"loading {reference} failed: {short(exc)}") from None
        except CONNECTION_ERRORS as exc:
            raise self.connection.gone(exc) from None
        image_id = self.image_id(reference)
        if image_id is None:
            raise ImageError(f"loading {reference} made no image of that name")
        return image_id

    def remove_image(self, image_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.connection.call(self.api.remove_image, image_id, force=True, noprune=False)

    # --- containers ------------------------------------------------------------------------

    def containers(self, label: str | None = None) -> list[ContainerRecord]:
        """Containers carrying `label`; with None, every container of the daemon, ours or not
        (the classic builder's intermediate containers carry no label of ours)."""
        filters = {"label": label} if label else None
        return [
            ContainerRecord(
                id=str(item["Id"]),
                name=(item.get("Names") or ["/" + str(item["Id"])[:12]])[0].lstrip("/"),
                labels=dict(item.get("Labels") or {}),
                command=str(item.get("Command") or ""),
                state=str(item.get("State") or ""),
                image=str(item.get("ImageID") or ""),
            )
            for item in self.connection.call(self.api.containers, all=True, filters=filters)
        ]

    def container_settings(self, container_id: str) -> ContainerSettings:
        info = self.connection.call(self.api.inspect_container, container_id)
        host = info.get("HostConfig") or {}
        return ContainerSettings(
            network_mode=str(host.get("NetworkMode") or ""),
            cap_drop=tuple(host.get("CapDrop") or ()),
            cap_add=tuple(host.get("CapAdd") or ()),
            privileged=bool(host.get("Privileged")),
            security_opt=tuple(host.get("SecurityOpt") or ()),
            memory=int(host.get("Memory") or 0),
            nano_cpus=int(host.get("NanoCpus") or 0),
            pids_limit=host.get("PidsLimit"),
            user=str((info.get("Config") or {}).get("User") or ""),
        )

    def remove_container(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.connection.call(self.api.remove_container, container_id, force=True, v=True)
        _live_containers.pop(container_id, None)

    @contextmanager
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
    ) -> Iterator[BuildContainer]:
        """A container that sleeps while we exec steps into it, removed on every exit path;
        `volumes` maps a named volume (never a host path) to where it is mounted, `tmpfs` a
        path to the options of a tmpfs mounted there (memory, counted in the container's
        limit; the archive API cannot reach into it). Every capability is dropped but those
        named in `cap_add` (only the guest disk's maker asks for one: reading every file)."""
        name = f"qga-builder-{self.run_id}-{uuid.uuid4().hex[:6]}"
        binds = {volume: {"bind": path, "mode": "rw"} for volume, path in (volumes or {}).items()}
        if any(not _VOLUME_NAME.match(volume) for volume in binds):  # a host path: never
            raise ValueError(f"not named volumes: {sorted(binds)}")
        host_config = self.api.create_host_config(
            binds=binds or None,
            tmpfs=dict(tmpfs) if tmpfs else None,
            network_mode="bridge" if network else "none",
            cap_drop=["ALL"],
            cap_add=list(cap_add) or None,
            security_opt=["no-new-privileges"],
            privileged=False,
            init=True,
            # The daemon removes the container itself if we cannot (e.g. it restarts mid-run).
            auto_remove=True,
            mem_limit=memory or DEFAULT_MEMORY,
            nano_cpus=int(cpus * 1e9) if cpus else None,
            pids_limit=4096,
        )
        all_labels = {
            LABEL_TOOL: __version__,
            LABEL_RUN: self.run_id,
            LABEL_OWNER: owner(),
            **labels,
        }
        container_id: str | None = None
        keep = False
        try:
            created = self.connection.call(
                self.api.create_container,
                image,
                command=["sleep", "infinity"],
                name=name,
                user=user,
                labels=all_labels,
                host_config=host_config,
                working_dir=workdir,
                hostname=hostname,
                network_disabled=not network,
            )
            container_id = created["Id"]
            _live_containers[container_id] = self
            self.connection.call(self.api.start, container_id)
            self.log.debug("container started", container=name, network=network)
            box = BuildContainer(self.connection, container_id, name, user)
            try:
                yield box
            except (Exception, Interrupted):
                keep = settings.current().keep_failed_container
                raise
        finally:
            if container_id is not None:
                if keep:
                    self.log.warning("keeping container for debugging", container=name)
                    _live_containers.pop(container_id, None)
                elif self.lost:  # auto_remove: the daemon removes it when it is back
                    self.log.warning("engine lost: its container is left to it", container=name)
                    _live_containers.pop(container_id, None)
                else:
                    self.remove_container(container_id)

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None:
        """A named volume of the engine's (made with our labels if missing)."""
        try:
            self.connection.call(self.api.inspect_volume, name)
        except docker.errors.NotFound:
            all_labels = {LABEL_TOOL: __version__, **labels}
            self.connection.call(self.api.create_volume, name, driver="local", labels=all_labels)

    def volumes(self, label: str) -> list[VolumeRecord]:
        """Volumes carrying `label` (a key, or key=value)."""
        found = self.connection.call(self.api.volumes, filters={"label": label}) or {}
        return [
            VolumeRecord(name=str(item["Name"]), labels=dict(item.get("Labels") or {}))
            for item in found.get("Volumes") or ()
        ]

    def remove_volume(self, name: str) -> str | None:
        """None when it is gone; otherwise the engine's reason (a container still uses it)."""
        try:
            self.connection.call(self.api.remove_volume, name)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            return short(exc)
        return None


DEFAULT_MEMORY = "8g"  # a build container's memory when the recipe sets none


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def remove_live_containers() -> int:
    """Last-resort cleanup at exit: remove containers this process made and still holds."""
    removed = 0
    for container_id, engine in list(_live_containers.items()):
        if engine.lost:
            continue
        try:
            engine.remove_container(container_id)
            removed += 1
        except Exception:
            pass
    return removed
