"""One running container of the engine's: copy files in and out, run commands with their output
streamed and their real exit code returned (`Engine.container` makes and removes it)."""

from __future__ import annotations

import io
import socket
import tarfile
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any

import docker.errors

from builder.engine.connection import CONNECTION_ERRORS, Connection, short
from builder.errors import ContainerError
from builder.log import LineSink, get_logger

MAX_LINE_BYTES = 16 * 1024


class BuildContainer:
    """One running container: copy in, copy out, run commands."""

    def __init__(self, connection: Connection, container_id: str, name: str, user: str) -> None:
        self.connection = connection
        self.id = container_id
        self.name = name
        self.user = user

    def put_archive(self, dest: str, archive: IO[bytes] | bytes) -> None:
        """Unpack an uncompressed tar stream at dest (which must exist)."""
        try:
            ok = self.connection.call(self.connection.api.put_archive, self.id, dest, archive)
        except docker.errors.APIError as exc:
            raise ContainerError(
                f"copying files into {self.name}:{dest} failed: {short(exc)}"
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
        exec_id = self._exec(command, user, stdin=True, stdout=True, stderr=True, tty=True)
        stream = self.connection.call(
            self.connection.api.exec_start, exec_id, socket=True, tty=True
        )
        raw = getattr(stream, "_sock", stream)
        assert isinstance(raw, socket.socket)
        return raw

    def start(self, command: list[str], *, user: str | None = None) -> None:
        """Start a command in the background (its output is not kept)."""
        exec_id = self._exec(command, user, stdout=False, stderr=False)
        self.connection.call(self.connection.api.exec_start, exec_id, detach=True)

    def _exec(self, command: list[str], user: str | None, **options: Any) -> str:
        """Create an exec of `command` in this container (as the container's user unless
        `user` is given); its id."""
        created = self.connection.call(
            self.connection.api.exec_create, self.id, command, user=user or self.user, **options
        )
        return str(created["Id"])

    def get_archive(self, path: str) -> Iterable[bytes]:
        try:
            stream, _ = self.connection.call(self.connection.api.get_archive, self.id, path)
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
        step: str = "",
    ) -> int:
        """Run a command, stream its merged stdout/stderr line by line; return its exit code.
        `step` names the command in the debug log (`-v`)."""
        api = self.connection.api
        get_logger().debug("exec", container=self.name, step=step or command[0])
        exec_id = self._exec(
            command, user, stdout=True, stderr=True, environment=dict(env or {}), workdir=workdir
        )
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
        except CONNECTION_ERRORS as exc:
            raise self.connection.gone(exc) from None
        if partial:
            on_line(partial.decode("utf-8", errors="replace"))
        # The stream can end a moment before the exec is marked finished.
        for _ in range(100):
            info = self.connection.call(api.exec_inspect, exec_id)
            if not info.get("Running"):
                return int(info["ExitCode"])
            time.sleep(0.05)
        raise ContainerError(f"command {command[0]} in {self.name} did not finish")


def _cut(line: bytes) -> bytes:
    if len(line) <= MAX_LINE_BYTES:
        return line
    return line[:MAX_LINE_BYTES] + f" [... {len(line) - MAX_LINE_BYTES} bytes cut]".encode()
