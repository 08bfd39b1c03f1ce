"""A small client for the guest agent's JSON protocol, over any byte stream.

Used to prove built agents behave: on a unix socket (`qemu-ga -m unix-listen`), a VM's
virtio-serial chardev, or a pty under wine. It follows what FIREWHEEL's driver does: guest-exec
with captured output, then guest-exec-status polls until `exited`.
"""

from __future__ import annotations

import base64
import json
import os
import random
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SYNC_DELIMITER = b"\xff"


class AgentError(RuntimeError):
    pass


class AgentTimeout(AgentError):
    pass


@dataclass
class ExecResult:
    exited: bool = False
    exitcode: int | None = None
    signal: int | None = None
    stdout_chunks: list[bytes] = field(default_factory=list)
    stderr_chunks: list[bytes] = field(default_factory=list)
    out_truncated: bool = False
    err_truncated: bool = False
    polls: int = 0

    @property
    def stdout(self) -> bytes:
        return b"".join(self.stdout_chunks)

    @property
    def stderr(self) -> bytes:
        return b"".join(self.stderr_chunks)


class AgentClient:
    """Talks to one agent over a connected file descriptor (socket or tty)."""

    def __init__(self, fd: int, *, closer: Callable[[], None] | None = None) -> None:
        self.fd = fd
        self._closer = closer
        self._buffer = b""
        self._decoder = json.JSONDecoder()

    @classmethod
    def connect_unix(cls, path: str, timeout: float = 10.0) -> AgentClient:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise AgentTimeout(f"no agent listening on {path}") from None
                time.sleep(0.05)
        return cls(sock.fileno(), closer=sock.close)

    def close(self) -> None:
        if self._closer:
            self._closer()
            self._closer = None

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- wire ------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AgentTimeout("the agent did not answer in time")
        ready, _, _ = select.select([self.fd], [], [], remaining)
        if not ready:
            raise AgentTimeout("the agent did not answer in time")
        try:
            chunk = os.read(self.fd, 65536)
        except OSError as exc:  # a pty whose other side closed reports EIO
            raise AgentError(f"the agent's channel closed: {exc}") from None
        if not chunk:
            raise AgentError("the agent closed the connection")
        self._buffer += chunk

    def _next_message(self, deadline: float) -> dict[str, Any]:
        while True:
            self._buffer = self._buffer.lstrip(SYNC_DELIMITER + b" \r\n\t")
            # A reply ends with "}": only then is a (costly, for 20 MB replies) decode worth it.
            if b"}" in self._buffer:
                # surrogateescape round-trips any byte, so the rest of the buffer stays exact.
                text = self._buffer.decode("utf-8", errors="surrogateescape")
                try:
                    value, end = self._decoder.raw_decode(text)
                except json.JSONDecodeError:
                    pass
                else:
                    self._buffer = text[end:].encode("utf-8", errors="surrogateescape")
                    if isinstance(value, dict):
                        return value
                    continue
            before = len(self._buffer)
            self._fill(deadline)
            while b"}" not in self._buffer[before:]:
                before = len(self._buffer)
                self._fill(deadline)

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        self._send(json.dumps(request).encode() + b"\n")
        reply = self._next_message(time.monotonic() + timeout)
        if "error" in reply:
            raise AgentError(f"{command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def sync(self, timeout: float = 30.0, attempt_every: float = 1.0) -> int:
        """guest-sync-delimited with a fresh id until the matching reply arrives.

        Replies to earlier syncs (sent before the agent was listening) may arrive late: they are
        skipped by id, never mistaken for the answer.
        """
        deadline = time.monotonic() + timeout
        sent: set[int] = set()
        while True:
            sync_id = random.randrange(1, 2**31)
            sent.add(sync_id)
            self._send(SYNC_DELIMITER)
            self._send(
                json.dumps(
                    {"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}
                ).encode()
                + b"\n"
            )
            attempt_deadline = min(deadline, time.monotonic() + attempt_every)
            try:
                while True:
                    reply = self._next_message(attempt_deadline)
                    if reply.get("return") == sync_id:
                        return sync_id
            except AgentTimeout:
                if time.monotonic() >= deadline:
                    raise AgentTimeout(f"no answer to guest-sync within {timeout:.0f} s") from None

    # --- guest-exec ------------------------------------------------------------------------

    def exec(self, path: str, args: list[str] | None = None) -> int:
        reply = self.execute(
            "guest-exec", {"path": path, "arg": args or [], "capture-output": True}
        )
        return int(reply["pid"])

    def exec_status(self, pid: int) -> dict[str, Any]:
        return dict(self.execute("guest-exec-status", {"pid": pid}))

    def poll(self, pid: int, result: ExecResult) -> dict[str, Any]:
        """One guest-exec-status call, folded into result."""
        status = self.exec_status(pid)
        result.polls += 1
        if "out-data" in status:
            result.stdout_chunks.append(base64.b64decode(status["out-data"]))
        if "err-data" in status:
            result.stderr_chunks.append(base64.b64decode(status["err-data"]))
        result.out_truncated |= bool(status.get("out-truncated"))
        result.err_truncated |= bool(status.get("err-truncated"))
        if status.get("exited"):
            result.exited = True
            result.exitcode = status.get("exitcode")
            result.signal = status.get("signal")
        return status

    def run(
        self,
        path: str,
        args: list[str] | None = None,
        *,
        timeout: float = 60.0,
        interval: float = 0.1,
    ) -> ExecResult:
        pid = self.exec(path, args)
        result = ExecResult()
        deadline = time.monotonic() + timeout
        while not result.exited:
            if time.monotonic() > deadline:
                raise AgentTimeout(f"{path} did not exit within {timeout:.0f} s")
            self.poll(pid, result)
            if not result.exited:
                time.sleep(interval)
        return result
