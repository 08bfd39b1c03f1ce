"""The connection to one Docker daemon: docker-py's low-level client made exactly as the
endpoint says (TLS verified, OpenSSH with deadlines, nothing from the environment), and every
call through `call`, which turns a lost daemon into DockerUnavailableError. The engine and its
containers share one `Connection`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker
import docker.constants
import docker.tls
import requests.exceptions

from builder.engine import ssh
from builder.engine.endpoints import Endpoint
from builder.errors import DockerUnavailableError

CONNECT_TIMEOUT = 5
OPERATION_TIMEOUT = 3600

# What a lost daemon looks like to docker-py.
CONNECTION_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.Timeout,
    ConnectionError,
)


def short(exc: BaseException) -> str:
    """An exception's first line, for an error message."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class Connection:
    """docker-py's clients for one endpoint, and whether the daemon was lost."""

    def __init__(self, target: Endpoint) -> None:
        self.target = target
        self.endpoint = target.shown
        self.lost = False  # set when a call found the daemon gone
        self.client = make_client(target)
        self.client.ping()
        self.api = self.client.api
        self.api.timeout = OPERATION_TIMEOUT

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CONNECTION_ERRORS as exc:
            raise self.gone(exc) from None

    def gone(self, exc: BaseException) -> DockerUnavailableError:
        self.lost = True  # no more calls that would wait on it (removals at exit)
        return DockerUnavailableError(
            f"lost the Docker daemon at {self.endpoint}: {short(exc)}",
            hint="when it is back, `qga-builder clean` removes what this run left",
        )

    def close(self) -> None:
        self.client.close()


def make_client(target: Endpoint) -> docker.DockerClient:
    tls = None
    if target.tls is not None:  # always verifying the engine's certificate
        cert = (str(target.tls.cert), str(target.tls.key)) if target.tls.cert else None
        tls = docker.tls.TLSConfig(client_cert=cert, ca_cert=str(target.tls.ca), verify=True)
    api = docker.APIClient(
        base_url=target.base_url,
        tls=tls,
        # OpenSSH, which checks the host key (docker-py's paramiko path accepts unknown ones).
        use_ssh_client=target.kind == "ssh",
        version=docker.constants.MINIMUM_DOCKER_API_VERSION,  # no request yet: see below
        timeout=CONNECT_TIMEOUT,
    )
    if target.kind == "ssh":  # docker-py's ssh waits without a deadline: ours has them
        ssh.ping(target.base_url)
        api._custom_adapter = ssh.Adapter(target.base_url, timeout=CONNECT_TIMEOUT)
        api.mount("http+docker://ssh", api._custom_adapter)
    # requests would let REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE replace the CA we name (any
    # certificate the system trusts would pass) and send the engine's traffic to a proxy:
    # the connection is exactly what the endpoint says, nothing from the environment.
    api.trust_env = False
    api._version = str(api.version(api_version=False)["ApiVersion"])  # as version="auto" does
    client = docker.DockerClient.__new__(docker.DockerClient)
    client.api = api
    return client
