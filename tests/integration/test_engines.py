"""Several engines, for real: a second dockerd on this machine (tests/second_engine.py), reached
over its unix socket and over TLS on tcp://127.0.0.1, with certificates made by the test.

No QEMU is compiled here: the base image is copied from the first engine, the build image is
built on the second (its apt-get reaches Debian's archive through the second engine's own
bridge), and a container runs on it.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.engine import LABEL_TOOL, Engine
from builder.engine import ssh as engine_ssh
from builder.errors import DockerUnavailableError
from builder.host.cache import Cache
from builder.log import StepOutput
from builder.stages.base_image import ensure_base
from builder.stages.build_image import ensure_build_image
from tests.helpers import EXPLICIT_RECIPE, run_cli
from tests.second_engine import SecondEngine, free_port
from tests.ssh_server import SshServer


def on(second: SecondEngine, url: str, monkeypatch: pytest.MonkeyPatch, certs=None) -> Engine:
    for name, value in second.tls_environment(certs).items():
        monkeypatch.setenv(name, value)
    return Engine(url)


def cli_on(url: str, environment: dict[str, str]):
    """A command that connects first and does nothing before: `base debootstrap`."""
    return run_cli(
        "base", "debootstrap", "--suite", "trixie", env={"DOCKER_HOST": url, **environment}
    )


def assert_one_clear_error(result, *patterns: str, code: int) -> None:
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for pattern in patterns:
        assert pattern in result.stderr, result.stderr[-2000:]


def test_tls_engine_is_reached_and_described(
    second_engine: SecondEngine, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with on(second_engine, second_engine.tcp_url, monkeypatch) as over_tls:
        described = over_tls.describe()
    with Engine(second_engine.unix_url) as over_socket:
        same = over_socket.describe()
    assert described["endpoint"] == second_engine.tcp_url
    assert (described["kind"], described["context"]) == ("tcp-tls", None)
    assert described["server_version"] and described["id"]
    assert same["kind"] == "unix" and same["id"] == described["id"]  # one daemon, two doors
    assert described["id"] != engine.describe()["id"]  # and not the first engine


def test_an_engine_our_ca_did_not_sign_is_refused(second_engine: SecondEngine) -> None:
    """DOCKER_CERT_PATH holds another CA (and a client certificate the engine would accept);
    REQUESTS_CA_BUNDLE names the engine's real CA: the engine is still refused, because the
    environment never replaces the CA the endpoint names."""
    environment = {
        **second_engine.tls_environment(second_engine.wrong_certs),
        "REQUESTS_CA_BUNDLE": str(second_engine.client_certs / "ca.pem"),
        "CURL_CA_BUNDLE": str(second_engine.client_certs / "ca.pem"),
    }
    result = cli_on(second_engine.tcp_url, environment)
    assert_one_clear_error(
        result,
        f"cannot reach the Docker daemon at {second_engine.tcp_url}",
        "certificate verify failed",
        code=DockerUnavailableError.exit_code,
    )
    with Engine(second_engine.unix_url) as second:
        assert second.containers() == []


def test_an_engine_that_does_not_answer(second_engine: SecondEngine, tmp_path: Path) -> None:
    silent = f"tcp://127.0.0.1:{free_port()}"
    result = cli_on(silent, second_engine.tls_environment())
    assert_one_clear_error(
        result, f"cannot reach the Docker daemon at {silent}", code=DockerUnavailableError.exit_code
    )
    missing = f"unix://{tmp_path}/no.sock"
    result = cli_on(missing, {})
    assert_one_clear_error(
        result,
        f"cannot reach the Docker daemon at {missing}",
        code=DockerUnavailableError.exit_code,
    )


def test_a_name_that_is_no_engine_is_a_usage_error() -> None:
    result = cli_on("ftp://127.0.0.1", {})
    assert_one_clear_error(result, "DOCKER_HOST ftp://127.0.0.1: unknown scheme ftp://", code=2)


def test_images_and_a_container_on_the_second_engine(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base is copied from the first engine (not debootstrapped again), the build image is
    built on a fresh second engine over TLS (apt-get reaches the archive through its bridge),
    and a container runs there; files go in and out through the API only. (Fresh: the
    session's second engine may already hold the base from an earlier test.)"""
    plan, _ = load_plan(EXPLICIT_RECIPE, Overrides())
    cache, lines = Cache.default(), []
    first_base = ensure_base(engine, plan.image.base, cache, lines.append)
    with SecondEngine() as fresh, on(fresh, fresh.tcp_url, monkeypatch) as second:
        started = time.monotonic()
        base = ensure_base(second, plan.image.base, cache, lines.append, peers=[engine])
        print(f"base copied in {time.monotonic() - started:.1f} s")
        assert base.image_id == first_base.image_id
        assert any(line.startswith("copying ") for line in lines), lines
        assert not any("debootstrap" in line for line in lines), lines
        started = time.monotonic()
        output = StepOutput("build-image", None, None)
        image = ensure_build_image(second, plan.image, base.image_id, "engines-test", cache, output)
        print(f"build image built in {time.monotonic() - started:.1f} s")
        assert second.inspect_image(image.tag) is not None
        with second.container(image.tag, labels={}, user="root") as box:
            box.put_files("/tmp", {"hello.txt": b"from the host\n"}, uid=0, gid=0)
            said: list[str] = []
            code = box.run(["sh", "-c", "cat /tmp/hello.txt; gcc --version"], on_line=said.append)
            assert code == 0, said
            assert said[0] == "from the host" and "gcc" in said[1]
        assert second.containers(LABEL_TOOL) == []


def test_losing_an_engine_mid_command(engine: Engine) -> None:
    """Images reach a fresh engine by copy (base and build image, from the first engine); an
    engine that dies under a running command is then one clear DockerUnavailableError (what
    the matrix retries on another engine); the first engine is untouched."""
    plan, _ = load_plan(EXPLICIT_RECIPE, Overrides())
    cache = Cache.default()
    first_base = ensure_base(engine, plan.image.base, cache, lambda line: None)
    first_image = ensure_build_image(
        engine, plan.image, first_base.image_id, "engines-test", cache, StepOutput("b", None, None)
    )
    with SecondEngine() as doomed, Engine(doomed.unix_url) as second:
        started = time.monotonic()
        base = ensure_base(second, plan.image.base, cache, print, peers=[engine])
        output = StepOutput("build-image", None, None)
        image = ensure_build_image(
            second, plan.image, base.image_id, "engines-test", cache, output, peers=[engine]
        )
        print(f"base and build image copied in {time.monotonic() - started:.1f} s")
        assert (image.image_id, image.reused) == (first_image.image_id, True)
        assert any(line.startswith("copied ") for line in output.tail), list(output.tail)
        lost = f"lost the Docker daemon at {doomed.unix_url}"
        with (
            pytest.raises(DockerUnavailableError, match=lost),
            second.container(image.tag, labels={}, user="root") as box,
        ):
            threading.Timer(1.0, doomed.kill).start()
            box.run(["sleep", "60"], on_line=print)
        assert not doomed.answers()
        assert second.lost  # so nothing more waits on it (the removals at exit skip it)
    assert engine.server_version()


def test_an_engine_over_ssh(
    second_engine: SecondEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ssh://user@host:port through the host's own ssh client; the remote side runs the docker
    CLI's `docker system dial-stdio` against the second engine (tests/ssh_server.py)."""
    with SshServer(tmp_path / "ssh", second_engine.socket) as server:
        monkeypatch.setenv("PATH", server.client_path())
        url = f"ssh://builder@127.0.0.1:{server.port}"
        with Engine(url) as over_ssh:
            described = over_ssh.describe()
            assert over_ssh.images(LABEL_TOOL) is not None
        with Engine(second_engine.unix_url) as direct:
            assert described["id"] == direct.describe()["id"]
        # The user name goes the way of any URL credentials: masked.
        shown = f"ssh://***@127.0.0.1:{server.port}"
        assert (described["kind"], described["endpoint"]) == ("ssh", shown)
        assert set(server.commands) == {b"docker system dial-stdio"}


def test_an_ssh_host_that_never_speaks_is_an_error_not_a_wait(
    second_engine: SecondEngine, tmp_path: Path
) -> None:
    """A port that accepts and then says nothing (no SSH banner): ssh's connect deadline, then
    one error. The subprocess timeout only stops a hang from hanging the suite."""
    with SshServer(tmp_path / "ssh", second_engine.socket) as server:
        path = server.client_path()
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(4)
    try:
        url = f"ssh://builder@127.0.0.1:{mute.getsockname()[1]}"
        result = run_cli("base", "debootstrap", "--suite", "trixie",
                         env={"DOCKER_HOST": url, "PATH": path}, timeout=300)  # fmt: skip
    finally:
        mute.close()
    print(f"refused in {result.seconds:.1f} s")
    shown = url.replace("builder@", "***@")
    assert_one_clear_error(
        result, f"cannot reach the Docker daemon at {shown}: ssh exited with 255", code=5
    )


def test_an_ssh_engine_that_never_answers_is_an_error_not_a_wait(
    second_engine: SecondEngine, tmp_path: Path
) -> None:
    """Login works, `docker system dial-stdio` starts and then never answers: the first ping's
    deadline (engine_ssh.ANSWER_TIMEOUT), then one error and no ssh left running."""
    with SshServer(tmp_path / "ssh", second_engine.socket, silent=True) as server:
        url = f"ssh://builder@127.0.0.1:{server.port}"
        environment = {"DOCKER_HOST": url, "PATH": server.client_path()}
        result = run_cli("base", "debootstrap", "--suite", "trixie", env=environment, timeout=300)
        print(f"refused in {result.seconds:.1f} s")
        shown = f"ssh://***@127.0.0.1:{server.port}"
        assert_one_clear_error(
            result,
            f"cannot reach the Docker daemon at {shown}: the engine did not answer through ssh "
            f"within {engine_ssh.ANSWER_TIMEOUT} s",
            code=5,
        )
        assert server.commands == [b"docker system dial-stdio"]
    left = subprocess.run(["pgrep", "-f", f"[-]p {server.port} -- 127.0.0.1"], capture_output=True)
    assert left.stdout == b"", "an ssh of the run is still running"


def test_an_ssh_engine_with_an_unknown_host_key_is_refused(
    second_engine: SecondEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SshServer(tmp_path / "ssh", second_engine.socket) as server:
        stranger = paramiko.RSAKey.generate(2048)
        path = server.client_path(known_key=stranger)
        url = f"ssh://builder@127.0.0.1:{server.port}"
        started = time.monotonic()
        result = run_cli(
            "base", "debootstrap", "--suite", "trixie", env={"DOCKER_HOST": url, "PATH": path}
        )
        print(f"refused in {time.monotonic() - started:.1f} s")
        # ssh says why on stderr itself (the child inherits it); then our one error.
        shown = f"ssh://***@127.0.0.1:{server.port}"
        assert_one_clear_error(result, f"cannot reach the Docker daemon at {shown}", code=5)
        assert "Host key verification failed" in result.stderr
        assert server.commands == []
