"""The only module that talks to Docker.

`Engine` connects to a daemon, builds and imports images, answers with typed records, and hands
out `BuildContainer`s, each owning one container's whole life (labelled, removed on every exit
path, Ctrl-C and SIGTERM too): copies in and out, commands streamed with their real exit code.
QGA_BUILDER_KEEP_CONTAINER=1 keeps a failed run's container for debugging.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import tarfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import IO, Any

import docker
import docker.errors
import requests.exceptions

from builder import __version__
from builder.config import settings
from builder.engine_records import (  # noqa: F401 - re-exported: the engine's vocabulary
    LABEL_BASE,
    LABEL_INPUTS,
    LABEL_KIND,
    LABEL_OWNER,
    LABEL_RECIPE,
    LABEL_RUN,
    LABEL_TOOL,
    ContainerRecord,
    ContainerSettings,
    ImageRecord,
)
from builder.errors import ContainerError, DockerUnavailableError, ImageError, Interrupted
from builder.log import LineSink, get_logger

CONNECT_TIMEOUT = 5
OPERATION_TIMEOUT = 3600

# Containers made by this process and not yet removed; cli removes them on exit as a last resort.
_live_containers: dict[str, Engine] = {}

_CONNECTION_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.Timeout,
    ConnectionError,
)


class Engine:
    """A connection to one Docker daemon."""

    def __init__(self, endpoint: str | None = None) -> None:
        host = settings.current()
        self.endpoint = endpoint or host.docker_host
        self.run_id = uuid.uuid4().hex[:12]
        self.log = get_logger()
        try:
            self.client = docker.DockerClient(
                **_connection(self.endpoint, host), version="auto", timeout=CONNECT_TIMEOUT
            )
            self.client.ping()
        except (docker.errors.DockerException, *_CONNECTION_ERRORS) as exc:
            raise DockerUnavailableError(
                f"cannot reach the Docker daemon at {self.endpoint}: {_short(exc)}",
                hint="start one with `make setup` (scripts/setup.sh), "
                "or point DOCKER_HOST at a running daemon",
            ) from None
        self.api = self.client.api
        self.api.timeout = OPERATION_TIMEOUT

    def close(self) -> None:
        self.client.close()

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
        return str(self._call(self.api.version).get("Version", ""))

    # --- images ----------------------------------------------------------------------------

    def inspect_image(self, reference: str) -> ImageRecord | None:
        try:
            info = self._call(self.api.inspect_image, reference)
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
            self._call(self.client.images.pull, reference)
        except docker.errors.APIError as exc:
            raise ImageError(
                f"base image {reference} is not here and cannot be pulled: {_short(exc)}",
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
    ) -> str:
        """Build from a context holding only the Dockerfile; stream its log; return the id."""
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
            raise ImageError(f"building image {tag} failed: {_short(exc)}") from None
        except Interrupted:
            # Dropping the connection is what makes the daemon cancel a classic build (and
            # remove its intermediate containers, forcerm).
            self.api.close()
            raise
        except _CONNECTION_ERRORS as exc:
            raise self._gone(exc) from None
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
            raise ImageError(f"importing {reference} failed: {_short(exc)}") from None
        except _CONNECTION_ERRORS as exc:
            raise self._gone(exc) from None
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
            for item in self._call(self.api.images, filters={"label": label})
        ]

    def remove_image(self, image_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._call(self.api.remove_image, image_id, force=True, noprune=False)

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
            for item in self._call(self.api.containers, all=True, filters=filters)
        ]

    def container_settings(self, container_id: str) -> ContainerSettings:
        info = self._call(self.api.inspect_container, container_id)
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
            self._call(self.api.remove_container, container_id, force=True, v=True)
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
    ) -> Iterator[BuildContainer]:
        """A container that sleeps while we exec steps into it, removed on every exit path;
        `volumes` maps a named volume (never a host path) to where it is mounted."""
        name = f"qga-builder-{self.run_id}-{uuid.uuid4().hex[:6]}"
        host_config = self.api.create_host_config(
            network_mode="bridge" if network else "none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            privileged=False,
            init=True,
            # The daemon removes the container itself if we cannot (e.g. it restarts mid-run).
            auto_remove=True,
            mem_limit=memory or DEFAULT_MEMORY,
            nano_cpus=int(cpus * 1e9) if cpus else None,
            pids_limit=4096,
            binds={name: {"bind": path, "mode": "rw"} for name, path in (volumes or {}).items()},
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
            created = self._call(
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
            self._call(self.api.start, container_id)
            self.log.debug("container started", container=name, network=network)
            box = BuildContainer(self, container_id, name, user)
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
                else:
                    self.remove_container(container_id)

    # --- helpers ---------------------------------------------------------------------------

    def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _CONNECTION_ERRORS as exc:
            raise self._gone(exc) from None

    def _gone(self, exc: BaseException) -> DockerUnavailableError:
        return DockerUnavailableError(
            f"lost the Docker daemon at {self.endpoint}: {_short(exc)}",
            hint="when it is back, `qga-builder clean` removes what this run left",
        )


class BuildContainer:
    """One running container: copy in, copy out, run commands."""

    def __init__(self, engine: Engine, container_id: str, name: str, user: str) -> None:
        self.engine = engine
        self.id = container_id
        self.name = name
        self.user = user

    def put_archive(self, dest: str, archive: IO[bytes] | bytes) -> None:
        """Unpack an uncompressed tar stream at dest (which must exist)."""
        try:
            ok = self.engine._call(self.engine.api.put_archive, self.id, dest, archive)
        except docker.errors.APIError as exc:
            raise ContainerError(
                f"copying files into {self.name}:{dest} failed: {_short(exc)}"
            ) from None
        if not ok:
            raise ContainerError(f"copying files into {self.name}:{dest} failed")

    def put_files(self, dest: str, files: Mapping[str, bytes], *, uid: int, gid: int) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                info.uid, info.gid = uid, gid
                tar.addfile(info, io.BytesIO(data))
        buffer.seek(0)
        self.put_archive(dest, buffer)

    def open_stream(self, command: list[str], *, user: str | None = None) -> socket.socket:
        """Start a command with a terminal and return a socket on it: bytes written go to its
        stdin, bytes read are its output, unframed (for a byte channel into the container,
        e.g. `socat STDIO,raw,echo=0 PTY,...` as a guest agent's serial port)."""
        api = self.engine.api
        exec_id = self.engine._call(
            api.exec_create,
            self.id,
            command,
            stdin=True,
            stdout=True,
            stderr=True,
            tty=True,
            user=user or self.user,
        )["Id"]
        stream = self.engine._call(api.exec_start, exec_id, socket=True, tty=True)
        raw = getattr(stream, "_sock", stream)
        assert isinstance(raw, socket.socket)
        return raw

    def start(self, command: list[str], *, user: str | None = None) -> None:
        """Start a command in the background (its output is not kept)."""
        api = self.engine.api
        exec_id = self.engine._call(
            api.exec_create, self.id, command, stdout=False, stderr=False, user=user or self.user
        )["Id"]
        self.engine._call(api.exec_start, exec_id, detach=True)

    def get_archive(self, path: str) -> Iterable[bytes]:
        try:
            stream, _ = self.engine._call(self.engine.api.get_archive, self.id, path)
        except docker.errors.NotFound:
            raise FileNotFoundError(path) from None
        return stream

    def run(
        self,
        command: list[str],
        *,
        on_line: LineSink,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
    ) -> int:
        """Run a command, stream its merged stdout/stderr line by line; return its exit code."""
        api = self.engine.api
        exec_id = self.engine._call(
            api.exec_create,
            self.id,
            command,
            stdout=True,
            stderr=True,
            environment=dict(env or {}),
            workdir=workdir,
            user=user or self.user,
        )["Id"]
        partial = b""
        try:
            for chunk in api.exec_start(exec_id, stream=True):
                partial += chunk
                *lines, partial = partial.split(b"\n")
                if len(partial) > MAX_LINE_BYTES:  # a line without end is cut, not hoarded
                    lines.append(partial)
                    partial = b""
                for line in lines:
                    on_line(_cut(line).decode("utf-8", errors="replace"))
        except _CONNECTION_ERRORS as exc:
            raise self.engine._gone(exc) from None
        if partial:
            on_line(partial.decode("utf-8", errors="replace"))
        # The stream can end a moment before the exec is marked finished.
        for _ in range(100):
            info = self.engine._call(api.exec_inspect, exec_id)
            if not info.get("Running"):
                return int(info["ExitCode"])
            time.sleep(0.05)
        raise ContainerError(f"command {command[0]} in {self.name} did not finish")


def _connection(endpoint: str, host: settings.HostSettings) -> dict[str, Any]:
    """base_url and TLS as docker's from_env would make them: with DOCKER_TLS_VERIFY a tcp://
    engine is reached over TLS that verifies the engine's certificate against ca.pem."""
    environment = {"DOCKER_HOST": endpoint}
    if host.docker_tls_verify:
        environment["DOCKER_TLS_VERIFY"] = "1"
    if host.docker_cert_path:
        environment["DOCKER_CERT_PATH"] = host.docker_cert_path
    kwargs = docker.utils.kwargs_from_env(environment=environment)
    if endpoint.startswith("tcp://") and "tls" not in kwargs:
        get_logger().warning(
            "the Docker engine is reached over plain HTTP: anyone on the way can read and "
            "change the build; set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH",
            engine=endpoint,
        )
    return kwargs


MAX_LINE_BYTES = 16 * 1024
DEFAULT_MEMORY = "8g"  # a build container's memory when the recipe sets none


def _cut(line: bytes) -> bytes:
    if len(line) <= MAX_LINE_BYTES:
        return line
    return line[:MAX_LINE_BYTES] + f" [... {len(line) - MAX_LINE_BYTES} bytes cut]".encode()


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def remove_live_containers() -> int:
    """Last-resort cleanup at exit: remove containers this process made and still holds."""
    removed = 0
    for container_id, engine in list(_live_containers.items()):
        try:
            engine.remove_container(container_id)
            removed += 1
        except Exception:
            pass
    return removed
