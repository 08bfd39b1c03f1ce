"""A tcp:// engine named with DOCKER_TLS_VERIFY is reached over TLS that verifies the engine's
certificate: an engine whose certificate our CA did not sign, or one that speaks plain HTTP,
is refused with one clear error (never a silent fall back to plain HTTP). The handshakes are
real (openssl-made certificates, a local TLS listener); a real engine over TLS is
tests/integration/test_engines.py's."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.engine import Engine
from builder.errors import DockerUnavailableError
from tests.certificates import make_ca, sign


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[Path, Path]:
    """Our CA with a client certificate (DOCKER_CERT_PATH), and a server signed by another CA."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    make_ca(ours, "our-ca")
    sign(ours, "client", ours)
    (ours / "cert.pem").write_bytes((ours / "client.pem").read_bytes())
    (ours / "key.pem").write_bytes((ours / "client-key.pem").read_bytes())
    make_ca(theirs, "their-ca")
    sign(theirs, "server", theirs, san="IP:127.0.0.1")
    return ours, theirs


def serve(listener: socket.socket, context: ssl.SSLContext | None) -> None:
    try:
        connection, _ = listener.accept()
    except OSError:
        return
    try:
        if context is not None:
            connection = context.wrap_socket(connection, server_side=True)
        connection.recv(4096)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    except (ssl.SSLError, OSError):
        pass
    finally:
        connection.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    yield sock
    sock.close()


def start(listener: socket.socket, context: ssl.SSLContext | None) -> None:
    threading.Thread(target=serve, args=(listener, context), daemon=True).start()


def engine_at(port: int, certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))
    Engine(f"tcp://127.0.0.1:{port}")


def test_an_engine_our_ca_did_not_sign_is_refused(
    certificates: tuple[Path, Path], listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, theirs = certificates
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(theirs / "server.pem", theirs / "server-key.pem")
    start(listener, context)
    with pytest.raises(DockerUnavailableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        engine_at(listener.getsockname()[1], ours, monkeypatch)


def test_plain_http_is_not_a_fall_back(
    certificates: tuple[Path, Path], listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, _ = certificates
    start(listener, None)  # answers in plain HTTP
    with pytest.raises(DockerUnavailableError, match=r"SSL|ssl|TLS|record"):
        engine_at(listener.getsockname()[1], ours, monkeypatch)


def test_missing_certificates_are_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DockerUnavailableError, match="cannot reach the Docker daemon"):
        engine_at(1, tmp_path / "nothing-here", monkeypatch)
