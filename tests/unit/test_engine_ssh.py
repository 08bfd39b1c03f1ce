"""ssh:// engines: the ssh command line, and how the first ping's answer is read.

The ping tests put a stand-in `ssh` first on PATH that prints a canned reply: they test our
reading of answers and failures; the real OpenSSH client against a real dial-stdio is in
tests/integration/test_engines.py."""

from __future__ import annotations

import os
from pathlib import Path

import docker.errors
import pytest

from builder.engine import ssh as engine_ssh
from builder.engine.ssh import DIAL, SSH_OPTIONS, ssh_argv


def test_the_command_line_names_user_port_and_host_after_the_options() -> None:
    argv = ssh_argv("ssh://builder@build-2.lab:2222")
    assert argv == ["ssh", *SSH_OPTIONS, "-l", "builder", "-p", "2222", "--", "build-2.lab", DIAL]
    assert ssh_argv("builder@build-2.lab:2222") == argv  # docker-py's form, without ssh://


def test_a_bare_host_and_an_ipv6_host() -> None:
    assert ssh_argv("ssh://build-2")[-2:] == ["build-2", DIAL]
    assert ssh_argv("ssh://[fd00::2]:22")[-4:] == ["22", "--", "fd00::2", DIAL]


def test_ssh_never_prompts_and_gives_up_on_a_silent_host() -> None:
    options = SSH_OPTIONS[1::2]
    assert "BatchMode=yes" in options
    assert any(o.startswith("ConnectTimeout=") for o in options)
    assert any(o.startswith("ServerAliveInterval=") for o in options)
    assert any(o.startswith("ServerAliveCountMax=") for o in options)


def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f"#!/bin/sh\ncat > /dev/null\n{script}\n")
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_an_ok_ping_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ssh(tmp_path, monkeypatch, r"printf 'HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\n\r\nOK'")
    engine_ssh.ping("ssh://builder@host")


def test_an_answer_is_enough_even_if_ssh_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dial-stdio need not exit when the engine hangs up: the answer is what counts."""
    fake_ssh(tmp_path, monkeypatch, r"printf 'HTTP/1.1 200 OK\r\n\r\nOK'; exec sleep 60")
    monkeypatch.setattr(engine_ssh, "ANSWER_TIMEOUT", 20)
    engine_ssh.ping("ssh://builder@host")  # waiting for ssh to exit would end at the deadline


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("exit 255", "ssh exited with 255 before the engine answered"),
        (r"printf 'HTTP/1.1 500 Internal Server Error\r\n\r\nno'", "answered the ping with"),
        (r"printf 'SSH-2.0-OpenSSH\r\n\r\n'", "answered the ping with"),
    ],
)
def test_no_ok_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, message: str
) -> None:
    fake_ssh(tmp_path, monkeypatch, script)
    with pytest.raises(docker.errors.DockerException, match=message):
        engine_ssh.ping("ssh://builder@host")


def test_an_engine_that_never_answers_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ssh(tmp_path, monkeypatch, "exec sleep 60")
    monkeypatch.setattr(engine_ssh, "ANSWER_TIMEOUT", 0.5)
    with pytest.raises(docker.errors.DockerException, match="did not answer through ssh"):
        engine_ssh.ping("ssh://builder@host")
