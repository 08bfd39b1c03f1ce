"""An SSH server on 127.0.0.1 for the ssh:// engine test, and a client set-up that trusts it.

The server is paramiko's (no sshd is installed or started on the machine); what it runs for
`docker system dial-stdio` is the real docker CLI's dial-stdio, pointed at an engine's socket.
The client is the host's own OpenSSH `ssh` (what docker-py's use_ssh_client runs), given our
key, our known_hosts and BatchMode by a wrapper `ssh` put first on PATH: the user's ~/.ssh is
never read nor written.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from pathlib import Path
from types import TracebackType

import paramiko

DIAL = b"docker system dial-stdio"


class _Session(paramiko.ServerInterface):
    def __init__(self, allowed: paramiko.PKey) -> None:
        self.allowed = allowed
        self.command: bytes | None = None
        self.ready = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = key.get_base64() == self.allowed.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.command = command
        self.ready.set()
        return True


class SshServer:
    """Serves `docker system dial-stdio` (only that) for one engine socket, by key. `silent`:
    logs in and accepts the command, then never answers (a remote engine that hangs)."""

    def __init__(self, directory: Path, engine_socket: Path, silent: bool = False) -> None:
        self.directory = directory
        self.engine_socket = engine_socket
        self.silent = silent
        self.closed = threading.Event()
        directory.mkdir(parents=True, exist_ok=True)
        self.host_key = paramiko.RSAKey.generate(2048)
        key = directory / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            capture_output=True,
        )
        self.client_key = paramiko.Ed25519Key.from_private_key_file(str(key))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.commands: list[bytes] = []
        self._closing = False

    def client_path(self, known_key: paramiko.PKey | None = None) -> str:
        """A PATH whose `ssh` is the host's, with our key and known_hosts (the server's host
        key, or `known_key` to make the server a stranger), never prompting."""
        known = known_key or self.host_key
        hosts = self.directory / "known_hosts"
        hosts.write_text(f"[127.0.0.1]:{self.port} {known.get_name()} {known.get_base64()}\n")
        config = self.directory / "ssh_config"
        config.write_text(
            "Host *\n"
            f"  IdentityFile {self.directory / 'id_ed25519'}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 5\n"
        )
        bin_dir = self.directory / "bin"
        bin_dir.mkdir(exist_ok=True)
        wrapper = bin_dir / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {config} "$@"\n')
        wrapper.chmod(0o755)
        return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"

    def __enter__(self) -> SshServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        self.closed.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        transport = paramiko.Transport(connection)
        transport.add_server_key(self.host_key)
        session = _Session(self.client_key)
        try:
            transport.start_server(server=session)
            channel = transport.accept(10)
            if channel is None or not session.ready.wait(10):
                return
            self.commands.append(session.command or b"")
            if session.command != DIAL:
                channel.send_exit_status(127)
                return
            if self.silent:
                self.closed.wait()
                return
            self._dial(channel)
        except (paramiko.SSHException, OSError, EOFError):
            pass
        finally:
            transport.close()

    def _dial(self, channel: paramiko.Channel) -> None:
        process = subprocess.Popen(
            ["docker", "system", "dial-stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "DOCKER_HOST": f"unix://{self.engine_socket}"},
        )
        assert process.stdin and process.stdout

        def inbound() -> None:
            with contextlib.suppress(OSError):
                while data := channel.recv(65536):
                    process.stdin.write(data)
                    process.stdin.flush()
            with contextlib.suppress(OSError):
                process.stdin.close()

        threading.Thread(target=inbound, daemon=True).start()
        with contextlib.suppress(OSError):
            while data := process.stdout.read1(65536):
                channel.sendall(data)
        channel.send_exit_status(process.wait())
        channel.close()
