"""A second Docker engine on this machine, for the engine and matrix tests.

It is a real `dockerd` with everything of its own, so that it never touches the shared engine:
- its own --data-root, --exec-root, --pidfile and unix socket (all under one directory we make);
- its own bridge: made here with `ip link add NAME type bridge`, addressed, and given to
  `dockerd --bridge=NAME`, so it does not fight the first engine over docker0;
- `--iptables=false`: dockerd would otherwise rewrite the DOCKER chains the first engine uses.
  We add the three rules its containers need to reach Debian's archive ourselves (masquerade
  its subnet, forward out of and back into its bridge) and remove exactly those at the end;
- a TLS listener `-H tcp://127.0.0.1:PORT --tlsverify` with a CA, a server certificate for
  IP:127.0.0.1 and client certificates made here with openssl, plus a second CA that signed
  nothing of the engine's (a wrong DOCKER_CERT_PATH: that CA with a good client certificate).
`kill()` loses the engine (SIGKILL to dockerd, its containerd and their shims, found by our own
exec-root in their command line); `stop()` ends it cleanly; `close()` also removes its bridge,
rules, mounts and directories. Needs root, dockerd, ip, iptables and openssl.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from tests.certificates import client_directory, make_ca, sign

START_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no interface of this host uses."""
    used = subprocess.run(
        ["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True
    ).stdout
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for third in range(10, 250):
        net = ipaddress.IPv4Network(f"10.213.{third}.0/24")
        if f"10.213.{third}." not in used + routes:
            return net
    raise RuntimeError("no free 10.213.x.0/24 for the second engine's bridge")


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=check)


class SecondEngine:
    """A second dockerd, started by `start()` (or `with`), removed by `close()`."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"qga-engine2-{tag}"
        # Not under /var/lib/docker (the first engine's), and on a disk (overlay2 needs one:
        # not tmpfs). Short: containerd's sockets live under the exec root (108-byte limit).
        self.root = Path(tempfile.mkdtemp(prefix=f"qga-engine2-{tag}-", dir="/var/tmp"))
        self.exec_root = Path(f"/run/qga-e2-{tag}")
        self.socket = self.exec_root / "docker.sock"
        self.bridge = f"qgae2{tag}"  # interface names: at most 15 characters
        self.subnet = free_subnet()
        self.port = free_port()
        self.certs = self.root / "certs"
        self.log_path = self.root / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._rules: list[list[str]] = []

    # --- what tests use -----------------------------------------------------------------

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def tcp_url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def client_certs(self) -> Path:
        """A DOCKER_CERT_PATH the engine accepts (its CA; a client certificate it signed)."""
        return self.certs / "client"

    @property
    def wrong_certs(self) -> Path:
        """A DOCKER_CERT_PATH whose ca.pem signed nothing of this engine's (its client
        certificate is one the engine accepts)."""
        return self.certs / "wrong-client"

    def tls_environment(self, certs: Path | None = None) -> dict[str, str]:
        return {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs or self.client_certs)}

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # --- life -----------------------------------------------------------------------------

    def start(self) -> SecondEngine:
        sweep_leftovers()
        self._record()
        self._make_certificates()
        self._make_bridge()
        self.exec_root.mkdir(mode=0o700, exist_ok=True)
        config = self.root / "daemon.json"
        config.write_text(json.dumps({"deprecated-key-path": str(self.root / "key.json")}))
        command = [
            "dockerd",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.exec_root / 'dockerd.pid'}",
            f"--host={self.unix_url}",
            f"--host={self.tcp_url}",
            "--tlsverify",
            f"--tlscacert={self.certs / 'ca' / 'ca.pem'}",
            f"--tlscert={self.certs / 'ca' / 'server.pem'}",
            f"--tlskey={self.certs / 'ca' / 'server-key.pem'}",
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip-forward=false",  # the first engine has already turned it on
            f"--fixed-cidr={self.subnet}",
            "--storage-driver=overlay2",
            # Our own config file, not the first engine's /etc/docker/daemon.json; it names
            # the daemon's key (its ID comes from it; kept in /etc/docker unless named, so both
            # engines of the machine would report the same ID).
            f"--config-file={config}",
        ]
        with self.log_path.open("wb") as log:
            # Its own session: its output never holds a test runner's pipe open.
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the second dockerd exited:\n{self.log_tail()}")
            if self.answers():
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the second dockerd did not answer in {START_TIMEOUT} s")

    def answers(self) -> bool:
        """Whether the engine answers a ping on its unix socket."""
        if not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            try:
                sock.connect(str(self.socket))
                sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b" 200 " in sock.recv(256)
            except OSError:
                return False

    def kill(self) -> None:
        """Lose the engine at once, as a crashed host would: SIGKILL to dockerd, its
        containerd and the shims of its containers (their command lines name our exec root)."""
        for pid in self._our_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        """End the engine cleanly (SIGTERM: dockerd stops its containers and containerd)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        """Stop it and remove everything it had: processes, mounts, bridge, rules, files."""
        self.stop()
        self.kill()  # whatever is left (shims of a killed engine)
        for mount in reversed(self._mounts()):
            _run("umount", "-l", mount, check=False)
        for rule in reversed(self._rules):
            _run("iptables", *rule_delete(rule), check=False)
        self._rules.clear()
        _run("ip", "link", "delete", self.bridge, check=False)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SecondEngine:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- parts ----------------------------------------------------------------------------

    def _record(self) -> None:
        """What close() must undo, written down for `sweep_leftovers` in case this process
        dies before it can (a killed test session)."""
        state = {
            "owner": os.getpid(),
            "bridge": self.bridge,
            "exec_root": str(self.exec_root),
            "rules": self._rules,
        }
        (self.root / STATE).write_text(json.dumps(state))

    @classmethod
    def _from_record(cls, root: Path) -> SecondEngine:
        state = json.loads((root / STATE).read_text())
        engine = cls.__new__(cls)
        engine.root, engine.exec_root = root, Path(state["exec_root"])
        engine.bridge, engine._rules = state["bridge"], state["rules"]
        engine.process = None
        return engine

    def _make_certificates(self) -> None:
        ca, other = self.certs / "ca", self.certs / "other-ca"
        make_ca(ca, "qga-engine2-ca")
        sign(ca, "server", ca, san="IP:127.0.0.1")
        client_directory(self.client_certs, ca)
        make_ca(other, "qga-other-ca")
        # The wrong CA, with a client certificate the engine accepts: only our side's
        # verification of the engine can refuse it.
        shutil.copytree(self.client_certs, self.wrong_certs)
        (self.wrong_certs / "ca.pem").write_bytes((other / "ca.pem").read_bytes())

    def _make_bridge(self) -> None:
        gateway = next(self.subnet.hosts())
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for rule in (
            ["-t", "nat", "-I", "POSTROUTING", "-s", str(self.subnet), "!", "-o", self.bridge,
             "-j", "MASQUERADE"],
            ["-I", "FORWARD", "-i", self.bridge, "!", "-o", self.bridge, "-j", "ACCEPT"],
            ["-I", "FORWARD", "-o", self.bridge, "-m", "conntrack", "--ctstate",
             "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ):  # fmt: skip
            _run("iptables", *rule)
            self._rules.append(rule)
            self._record()

    def _our_processes(self) -> list[int]:
        """dockerd (ours by its pid, or by its --exec-root when a dead session started it), its
        containerd and the shims of its containers (they name its containerd directory).
        Nothing else: a client's command line may well name our socket."""
        pids = []
        if self.process is not None and self.process.poll() is None:
            pids.append(self.process.pid)
        marks = (f"--exec-root={self.exec_root}".encode(), f"{self.exec_root}/containerd/".encode())
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command_line = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if any(mark in command_line for mark in marks) and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
        return pids

    def _mounts(self) -> list[str]:
        marks = (str(self.exec_root), str(self.root))
        mounts = []
        with open("/proc/self/mounts") as table:
            for line in table:
                point = line.split()[1]
                if point.startswith(marks):
                    mounts.append(point)
        return mounts


STATE = "second-engine.json"


def sweep_leftovers() -> None:
    """Remove what second engines of test processes that died left: only ours (a directory
    named qga-engine2-* under /var/tmp holding our record), only when its owner is gone."""
    for root in Path("/var/tmp").glob("qga-engine2-*"):
        try:
            owner = int(json.loads((root / STATE).read_text())["owner"])
        except (OSError, ValueError, KeyError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue
        SecondEngine._from_record(root).close()


def rule_delete(rule: list[str]) -> list[str]:
    """The iptables arguments that delete a rule added with -I or -A."""
    return ["-D" if part in ("-I", "-A") else part for part in rule]
