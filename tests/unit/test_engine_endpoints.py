"""Which engine a name means (`--engine`): URLs, TLS files from DOCKER_CERT_PATH, docker
contexts read from a store laid out as `docker context create` lays it out (made here)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from builder.config.settings import HostSettings
from builder.engine.endpoints import Endpoint, TlsFiles, resolve_endpoint
from builder.errors import DockerUnavailableError, UsageError


def host(tmp_path: Path, **environment: str) -> HostSettings:
    return HostSettings.from_environment(
        {"HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "docker"), **environment}
    )


def certificates(directory: Path, *names: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text("-----BEGIN CERTIFICATE-----\n")
    return directory


def context(tmp_path: Path, name: str, url: str, *, tls: tuple[str, ...] = (), skip=False):
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = tmp_path / "docker" / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    endpoint = {"Host": url, "SkipTLSVerify": skip}
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}})
    )
    if tls:
        certificates(tmp_path / "docker" / "contexts" / "tls" / digest / "docker", *tls)


def test_a_unix_socket(tmp_path: Path) -> None:
    found = resolve_endpoint("unix:///run/other.sock", host(tmp_path))
    assert found == Endpoint("unix:///run/other.sock", "unix", "unix:///run/other.sock")


def test_plain_tcp_without_certificates(tmp_path: Path) -> None:
    found = resolve_endpoint("tcp://10.0.0.5:2375", host(tmp_path))
    assert (found.kind, found.base_url, found.tls) == ("tcp", "tcp://10.0.0.5:2375", None)


def test_tcp_with_tls_verify_uses_the_cert_path(tmp_path: Path) -> None:
    certs = certificates(tmp_path / "certs", "ca.pem", "cert.pem", "key.pem")
    settings = host(tmp_path, DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(certs))
    found = resolve_endpoint("tcp://127.0.0.1:2376", settings)
    assert found.kind == "tcp-tls"
    assert found.tls == TlsFiles(certs / "ca.pem", certs / "cert.pem", certs / "key.pem")


def test_a_cert_path_with_a_ca_turns_tls_on_by_itself(tmp_path: Path) -> None:
    certs = certificates(tmp_path / "certs", "ca.pem")
    found = resolve_endpoint("tcp://127.0.0.1:2376", host(tmp_path, DOCKER_CERT_PATH=str(certs)))
    assert (found.kind, found.tls) == ("tcp-tls", TlsFiles(certs / "ca.pem"))


def test_tls_verify_without_a_ca_is_a_clear_error(tmp_path: Path) -> None:
    settings = host(tmp_path, DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(tmp_path / "none"))
    with pytest.raises(DockerUnavailableError, match=r"DOCKER_CERT_PATH .*none has no ca\.pem"):
        resolve_endpoint("tcp://127.0.0.1:2376", settings)


def test_a_client_certificate_without_its_key_is_a_clear_error(tmp_path: Path) -> None:
    certs = certificates(tmp_path / "certs", "ca.pem", "cert.pem")
    settings = host(tmp_path, DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(certs))
    with pytest.raises(DockerUnavailableError, match=r"key\.pem missing"):
        resolve_endpoint("tcp://127.0.0.1:2376", settings)


def test_ssh_keeps_the_url_and_masks_the_user(tmp_path: Path) -> None:
    found = resolve_endpoint("ssh://builder@build-2.example:2222", host(tmp_path))
    assert (found.kind, found.base_url) == ("ssh", "ssh://builder@build-2.example:2222")
    assert found.shown == found.url_shown == "ssh://***@build-2.example:2222"


def test_a_password_in_an_ssh_url_is_refused_and_not_shown(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="log in with a key") as caught:
        resolve_endpoint("ssh://builder:s3cret@build-2.example", host(tmp_path))
    assert "s3cret" not in caught.value.message


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("http://127.0.0.1:2375", r"--engine http://127\.0\.0\.1:2375: unknown scheme http://"),
        ("npipe:////./pipe/docker", "unknown scheme npipe://"),
        ("unix://relative.sock", "unix:///absolute/path"),
        ("tcp://:2375", r"tcp://host:port"),
        ("tcp://host:port", "the port is not a number"),
        ("tcp://user:pw@host:2375", r"tcp://host:port"),
        ("ssh://", r"an ssh engine is ssh://HOST\[:PORT\]"),
        ("ssh://host:22x", "the port is not a number"),
        ("", "an empty engine name"),
        ("/var/run/docker.sock", "not a URL nor a docker context name"),
        ("nosuch", r"--engine nosuch: no docker context of that name in .*contexts"),
    ],
)
def test_names_that_mean_no_engine(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        resolve_endpoint(name, host(tmp_path))
    assert caught.value.exit_code == 2
    assert "pw@" not in caught.value.message


def test_the_option_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^DOCKER_HOST ftp://x: unknown scheme"):
        resolve_endpoint("ftp://x", host(tmp_path), option="DOCKER_HOST")


def test_a_context_with_its_own_tls_files(tmp_path: Path) -> None:
    context(tmp_path, "build-2", "tcp://10.1.2.3:2376", tls=("ca.pem", "cert.pem", "key.pem"))
    # DOCKER_CERT_PATH is not the context's: its own files are used.
    settings = host(tmp_path, DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(tmp_path / "other"))
    found = resolve_endpoint("build-2", settings)
    stored = tmp_path / "docker/contexts/tls" / hashlib.sha256(b"build-2").hexdigest() / "docker"
    assert found == Endpoint(
        "build-2",
        "tcp-tls",
        "tcp://10.1.2.3:2376",
        tls=TlsFiles(stored / "ca.pem", stored / "cert.pem", stored / "key.pem"),
        context="build-2",
    )


def test_a_context_without_tls_is_plain_tcp(tmp_path: Path) -> None:
    context(tmp_path, "lab", "tcp://10.1.2.3:2375")
    found = resolve_endpoint("lab", host(tmp_path))
    assert (found.kind, found.tls, found.context) == ("tcp", None, "lab")


def test_unix_and_ssh_contexts(tmp_path: Path) -> None:
    context(tmp_path, "local2", "unix:///run/docker2.sock")
    context(tmp_path, "remote", "ssh://ci@build-3")
    assert resolve_endpoint("local2", host(tmp_path)).base_url == "unix:///run/docker2.sock"
    remote = resolve_endpoint("remote", host(tmp_path))
    assert (remote.kind, remote.base_url, remote.context) == ("ssh", "ssh://ci@build-3", "remote")


def test_the_default_context_is_docker_host(tmp_path: Path) -> None:
    found = resolve_endpoint("default", host(tmp_path, DOCKER_HOST="unix:///run/d.sock"))
    assert (found.kind, found.base_url, found.context) == ("unix", "unix:///run/d.sock", None)


def test_a_context_that_skips_verification_is_refused(tmp_path: Path) -> None:
    context(tmp_path, "lax", "tcp://10.1.2.3:2376", tls=("ca.pem",), skip=True)
    with pytest.raises(UsageError, match="lax: the context skips TLS verification"):
        resolve_endpoint("lax", host(tmp_path))


def test_a_broken_context_file_is_a_clear_error(tmp_path: Path) -> None:
    context(tmp_path, "broken", "tcp://x:1")
    meta = next((tmp_path / "docker/contexts/meta").glob("*/meta.json"))
    meta.write_text('{"Name": "broken", "Endpoints": {}}')
    with pytest.raises(UsageError, match=r"broken: .*meta\.json is not a docker context"):
        resolve_endpoint("broken", host(tmp_path))
