"""Which Docker engine a name means, and how to reach it: pure resolution, no connection.

An engine is named by a URL or by a docker context:
- `unix:///path/to/docker.sock`: a local socket;
- `tcp://host:port`: over TLS that verifies the engine's certificate against `ca.pem` (and
  shows ours, `cert.pem` + `key.pem`) from DOCKER_CERT_PATH (default ~/.docker) when
  DOCKER_TLS_VERIFY is set, or when DOCKER_CERT_PATH is set and holds `ca.pem` (certificates
  named are certificates meant); otherwise plain HTTP, which the engine warns about. TLS is
  never used without verifying the engine;
- `ssh://[user@]host[:port]`: through the host's OpenSSH client (docker-py's `use_ssh_client`:
  OpenSSH checks the host key, where docker-py's paramiko path would accept an unknown one);
  a key, never a password in the URL; the remote user runs `docker system dial-stdio`;
- anything else is a docker context's name, read from the CLI's store
  ($DOCKER_CONFIG/contexts, default ~/.docker): its `docker` endpoint and its own TLS files.
  `default` is DOCKER_HOST (or the default socket), as for the docker CLI.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from builder.config.settings import HostSettings
from builder.errors import DockerUnavailableError, UsageError
from builder.formats import redact

KINDS = ("unix", "tcp-tls", "tcp", "ssh")
_CONTEXT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_MAX_META_BYTES = 1 << 20


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path | None = None  # our client certificate and key: both or neither
    key: Path | None = None


@dataclass(frozen=True)
class Endpoint:
    """A resolved engine: what docker-py connects to, and how."""

    given: str  # as the user wrote it (may hold credentials: show `shown`)
    kind: str  # one of KINDS
    base_url: str
    tls: TlsFiles | None = None
    context: str | None = None  # the docker context it came from

    @property
    def shown(self) -> str:
        """The name as given, credentials masked: for messages and the manifest."""
        return redact.text(self.given)

    @property
    def url_shown(self) -> str:
        return redact.text(self.base_url)


def resolve_endpoint(name: str, host: HostSettings, *, option: str = "--engine") -> Endpoint:
    """The engine `name` means; a UsageError naming `option` when it means none."""
    name = name.strip()
    if not name:
        raise UsageError(f"{option}: an empty engine name", hint=_FORMS)
    if "://" not in name:
        return _from_context(name, host, option)
    return _from_url(name, name, host, option, tls=None, context=None)


_FORMS = (
    "an engine is unix:///path.sock, tcp://host:port (TLS from DOCKER_CERT_PATH), "
    "ssh://HOST[:PORT] (USER@ before HOST if needed) or a docker context's name "
    "(`docker context ls`)"
)


def _from_url(
    given: str,
    url: str,
    host: HostSettings,
    option: str,
    *,
    tls: TlsFiles | None,
    context: str | None,
) -> Endpoint:
    shown = redact.text(given)
    scheme = url.split("://", 1)[0].lower()
    parts = urlsplit(url)
    if scheme == "unix":
        if not parts.path.startswith("/") or parts.netloc:
            raise UsageError(f"{option} {shown}: a unix socket is unix:///absolute/path")
        return Endpoint(given, "unix", f"unix://{parts.path}", context=context)
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{option} {shown}: the port is not a number") from None
    if scheme == "ssh":
        if not parts.hostname or parts.path.strip("/"):
            raise UsageError(
                f"{option} {shown}: an ssh engine is ssh://HOST[:PORT], USER@ before HOST if needed"
            )
        if parts.password is not None:
            raise UsageError(
                f"{option} {shown}: ssh engines log in with a key, never a password in the URL",
                hint="load the key into ssh-agent or name it in ~/.ssh/config",
            )
        return Endpoint(given, "ssh", url, context=context)
    if scheme == "tcp":
        if not parts.hostname or parts.path.strip("/") or parts.username:
            raise UsageError(f"{option} {shown}: a tcp engine is tcp://host:port")
        base_url = f"tcp://{parts.netloc}" if port else f"tcp://{parts.hostname}"
        if context is None:
            tls = _tls_from_environment(host, shown)
        return Endpoint(given, "tcp-tls" if tls else "tcp", base_url, tls=tls, context=context)
    raise UsageError(f"{option} {shown}: unknown scheme {scheme}://", hint=_FORMS)


def _tls_from_environment(host: HostSettings, shown: str) -> TlsFiles | None:
    directory = Path(host.docker_cert_path or Path.home() / ".docker")
    wanted = host.docker_tls_verify or (
        host.docker_cert_path is not None and (directory / "ca.pem").is_file()
    )
    if not wanted:
        return None
    return _tls_files(directory, shown, "DOCKER_CERT_PATH")


def _tls_files(directory: Path, shown: str, where: str) -> TlsFiles:
    """The TLS files in `directory`; missing ones make the engine unreachable (exit 5)."""
    ca, cert, key = (directory / name for name in ("ca.pem", "cert.pem", "key.pem"))
    problem = None
    if not ca.is_file():
        problem = "no ca.pem: the engine's certificate cannot be verified"
    elif cert.is_file() != key.is_file():
        missing = key.name if cert.is_file() else cert.name
        problem = f"a client certificate without its pair ({missing} missing)"
    if problem:
        raise DockerUnavailableError(
            f"cannot reach the Docker daemon at {shown}: {where} {directory} has {problem}",
            hint="put the CA that signed the engine's certificate there as ca.pem, and the "
            "client certificate it accepts as cert.pem and key.pem",
        )
    return TlsFiles(ca, cert, key) if cert.is_file() else TlsFiles(ca)


def contexts_root(host: HostSettings) -> Path:
    return Path(host.docker_config or Path.home() / ".docker") / "contexts"


def _from_context(name: str, host: HostSettings, option: str) -> Endpoint:
    if name == "default":
        return _from_url(host.docker_host, host.docker_host, host, option, tls=None, context=None)
    if not _CONTEXT_NAME.match(name):
        raise UsageError(f"{option} {name!r}: not a URL nor a docker context name", hint=_FORMS)
    digest = hashlib.sha256(name.encode()).hexdigest()
    root = contexts_root(host)
    meta_path = root / "meta" / digest / "meta.json"
    if not meta_path.is_file():
        raise UsageError(
            f"{option} {name}: no docker context of that name in {root}",
            hint="`docker context ls` lists them; or give a URL: " + _FORMS,
        )
    try:
        if meta_path.stat().st_size > _MAX_META_BYTES:
            raise ValueError("too big")
        meta = json.loads(meta_path.read_text())
        docker_endpoint = meta["Endpoints"]["docker"]
        url = str(docker_endpoint["Host"])
        skip_verify = bool(docker_endpoint.get("SkipTLSVerify"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"{option} {name}: {meta_path} is not a docker context with a docker endpoint "
            f"({type(exc).__name__}: {str(exc)[:100]})"
        ) from None
    if skip_verify:
        raise UsageError(
            f"{option} {name}: the context skips TLS verification; the tool never talks to "
            "an engine it cannot verify",
            hint="`docker context update --docker 'skip-tls-verify=false,...'`, with its CA",
        )
    tls_directory = root / "tls" / digest / "docker"
    tls = None
    if (tls_directory / "ca.pem").is_file() or (tls_directory / "cert.pem").is_file():
        tls = _tls_files(tls_directory, name, f"context {name}: its TLS directory")
    return _from_url(name, url, host, option, tls=tls, context=name)
