"""Host settings: the one place that reads the environment.

Recipes say what to build; these say how this host runs it (where the engine and the cache are,
which wine, which mirror). Every variable is documented in README.md ("Host settings").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "QGA_BUILDER_CACHE"
KEEP_CONTAINER_ENV = "QGA_BUILDER_KEEP_CONTAINER"
MIRROR_ENV = "QGA_BUILDER_DEBIAN_MIRROR"
PASSPHRASE_ENV = "QGA_SIGNING_PASSPHRASE"
ATTESTATION_PASSPHRASE_ENV = "QGA_ATTESTATION_PASSPHRASE"
AUTHENTICODE_PASSWORD_ENV = "QGA_AUTHENTICODE_PASSWORD"
# Never inherited by a child process.
SECRETS = (PASSPHRASE_ENV, ATTESTATION_PASSPHRASE_ENV, AUTHENTICODE_PASSWORD_ENV)
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"

# Every variable the tool reads, with what it does (README's table is checked against this).
DOCUMENTED = {
    CACHE_ENV: "where fetched sources, apt state, run logs and VM assets live",
    "XDG_CACHE_HOME": f"the cache's parent when {CACHE_ENV} is not set (default ~/.cache)",
    KEEP_CONTAINER_ENV: "1 keeps a failed run's build container for debugging",
    MIRROR_ENV: "the Debian mirror for debootstrap and apt-get source (default: host apt's)",
    "DOCKER_HOST": f"the Docker engine to use (default {DEFAULT_DOCKER_HOST})",
    "DOCKER_TLS_VERIFY": "non-empty: reach a tcp:// engine over TLS, verifying its certificate",
    "DOCKER_CERT_PATH": "where ca.pem, cert.pem and key.pem are (default ~/.docker)",
    "DOCKER_CONFIG": "the docker CLI's directory, whose contexts/ name engines (default ~/.docker)",
    PASSPHRASE_ENV: "the passphrase of the key --signing-key or --signing-key-id names",
    ATTESTATION_PASSPHRASE_ENV: "the passphrase of an encrypted --attestation-key",
    AUTHENTICODE_PASSWORD_ENV: "the password of --authenticode-pfx, or the PIN of the PKCS#11 "
    "token --authenticode-key-uri names",
    "GNUPGHOME": "GnuPG's home, where --signing-key-id looks for the key (read by gpg)",
    "PATH": "where host tools (git, debootstrap, apt-get, wine, qemu-system) are found",
}


@dataclass(frozen=True)
class HostSettings:
    cache_root: Path
    keep_failed_container: bool
    debian_mirror: str | None
    docker_host: str
    search_path: str  # PATH, handed on to the host tools the tool runs
    docker_tls_verify: bool = False
    docker_cert_path: str | None = None
    docker_config: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> HostSettings:
        env = os.environ if environ is None else environ
        if env.get(CACHE_ENV):
            cache_root = Path(env[CACHE_ENV]).absolute()
        else:
            parent = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
            cache_root = Path(parent) / "qga-builder"
        return cls(
            cache_root=cache_root,
            keep_failed_container=env.get(KEEP_CONTAINER_ENV) == "1",
            debian_mirror=(env.get(MIRROR_ENV) or "").rstrip("/") or None,
            docker_host=env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST,
            search_path=env.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin",
            docker_tls_verify=bool(env.get("DOCKER_TLS_VERIFY")),
            docker_cert_path=env.get("DOCKER_CERT_PATH") or None,
            docker_config=env.get("DOCKER_CONFIG") or None,
        )


def signing_passphrase(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The signing key's passphrase from the environment (None: not set). Kept out of
    HostSettings, whose fields may be printed. Read from this process's environment, it is
    also taken out of it: nothing the tool starts afterwards (docker, ssh, gpg, a container's
    client) inherits it; a matrix hands it to its own builds explicitly."""
    return _secret(PASSPHRASE_ENV, environ)


def attestation_passphrase(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The --attestation-key's passphrase, taken out of the environment as the other one."""
    return _secret(ATTESTATION_PASSPHRASE_ENV, environ)


def authenticode_password(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The Authenticode key's password or PIN, taken out of the environment as the others."""
    return _secret(AUTHENTICODE_PASSWORD_ENV, environ)


def _secret(name: str, environ: Mapping[str, str] | None) -> bytes | None:
    value = os.environ.pop(name, None) if environ is None else environ.get(name)
    return None if value is None else value.encode("utf-8", "surrogateescape")


def current() -> HostSettings:
    """The settings as the environment says now (read each time: tests change it)."""
    return HostSettings.from_environment()


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a process the tool starts: its own, never a key's passphrase
    (however it got back in), plus `extra` (a matrix's builds get the passphrases that way)."""
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return {**env, **(extra or {})}
