"""ssh:// engines: docker-py's OpenSSH transport, with deadlines.

docker-py reaches an ssh:// engine by running `ssh HOST docker system dial-stdio` for each
request and reading its output with no deadline: a host that never answers, a login that waits
on a prompt, or a host that goes silent mid-build would make a run wait forever. Here every such
ssh runs with SSH_OPTIONS (never prompts; a deadline on the connection and the SSH handshake;
keepalives that drop a host silent for about a minute, so the engine counts as lost and a matrix
retries the recipe on another engine), and before its first request the engine must answer a
ping through the same ssh within ANSWER_TIMEOUT seconds. Options on the command line win over
~/.ssh/config; everything else (keys, host keys, proxies) still comes from the user's config.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import time
from urllib.parse import urlsplit

import docker.errors
from docker.transport import sshconn

CONNECT_TIMEOUT = 10  # TCP connect and the SSH handshake
ANSWER_TIMEOUT = 30  # the first ping, login and the remote docker CLI's start included
SSH_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
    "-o", "ServerAliveInterval=15",
    "-o", "ServerAliveCountMax=4",
)  # fmt: skip
DIAL = "docker system dial-stdio"
_PING = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
_MAX_HEAD = 64 * 1024


def ssh_argv(url: str) -> list[str]:
    """The ssh command that reaches the engine at ssh://[USER@]HOST[:PORT] (IPv6 in brackets)."""
    parts = urlsplit(url if url.startswith("ssh://") else f"ssh://{url}")
    if not parts.hostname:
        raise docker.errors.DockerException(f"no host in {url!r}")
    argv = ["ssh", *SSH_OPTIONS]
    if parts.username:
        argv += ["-l", parts.username]
    if parts.port:
        argv += ["-p", str(parts.port)]
    return [*argv, "--", parts.hostname, DIAL]


def start_ssh(url: str) -> subprocess.Popen[bytes]:
    """ssh to the engine's dial-stdio, its stdin and stdout ours; its stderr (what ssh says on
    failure) the user's."""
    return subprocess.Popen(
        ssh_argv(url),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,  # no terminal to prompt on, no Ctrl-C of ours
    )


def ping(url: str) -> None:
    """Ask the engine for /_ping through ssh; raise (docker-py's error type) unless it answers
    200 within ANSWER_TIMEOUT. What ssh says on failure goes to our stderr as it is."""
    try:
        process = start_ssh(url)
    except OSError as exc:
        raise docker.errors.DockerException(f"cannot run ssh: {exc}") from None
    try:
        head = _answer_head(process, time.monotonic() + ANSWER_TIMEOUT)
        if not head:
            code = process.wait(timeout=5)
            raise docker.errors.DockerException(
                f"ssh exited with {code} before the engine answered"
            )
    except subprocess.TimeoutExpired:
        raise docker.errors.DockerException("ssh did not exit after the engine hung up") from None
    finally:
        if process.poll() is None:
            process.kill()  # done with it, answered or not (dial-stdio need not exit by itself)
        process.wait()
        for pipe in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):  # stdin's unsent ping, if ssh died early
                if pipe:
                    pipe.close()
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if status.split()[1:2] != ["200"]:
        raise docker.errors.DockerException(f"the engine answered the ping with {status!r}")


def _answer_head(process: subprocess.Popen[bytes], deadline: float) -> bytes:
    """The HTTP head the engine sent back (b"" if ssh closed first); raises at the deadline.
    Reads the pipe's descriptor directly, so select() sees every byte not yet read."""
    assert process.stdin and process.stdout
    with contextlib.suppress(OSError):  # an ssh that already failed: its exit code tells
        process.stdin.write(_PING)
        process.stdin.close()
    answer = b""
    while b"\r\n\r\n" not in answer and len(answer) < _MAX_HEAD:
        left = deadline - time.monotonic()
        if left <= 0:
            raise docker.errors.DockerException(
                f"the engine did not answer through ssh within {ANSWER_TIMEOUT} s"
            )
        ready, _, _ = select.select([process.stdout.fileno()], [], [], left)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            answer += chunk
    return answer.partition(b"\r\n\r\n")[0]


class _Socket(sshconn.SSHSocket):
    """docker-py's ssh-backed socket, started with our options and in its own session."""

    def __init__(self, url: str) -> None:
        # Not docker-py's __init__: its split on ':' cannot read an IPv6 host.
        socket.socket.__init__(self, socket.AF_INET, socket.SOCK_STREAM)
        self.url = url
        self.proc = None

    def connect(self, **kwargs: object) -> None:
        self.proc = start_ssh(self.url)


class _Connection(sshconn.SSHConnection):
    def connect(self) -> None:
        sock = _Socket(self.ssh_host)
        sock.settimeout(self.timeout)
        sock.connect()
        self.sock = sock


class _Pool(sshconn.SSHConnectionPool):
    def _new_conn(self) -> _Connection:
        return _Connection(None, self.timeout, self.ssh_host)


class Adapter(sshconn.SSHHTTPAdapter):
    """Mounted on an APIClient made with use_ssh_client=True in place of docker-py's own."""

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(url, timeout=timeout, shell_out=True)

    def get_connection(self, url: str, proxies: object = None) -> _Pool:
        # As docker-py's shell-out path: one pool per request, each connection its own ssh.
        return _Pool(None, timeout=self.timeout, maxsize=self.max_pool_size, host=self.ssh_host)
