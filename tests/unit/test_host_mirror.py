"""Which Debian mirror a host uses, and what a host without one (Ubuntu) is told to do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from builder.config.settings import MIRROR_ENV
from builder.errors import InputError
from builder.host import debian

UBUNTU_SOURCES = """Types: deb
URIs: http://ubuntu.mirror.example/ubuntu/
Suites: noble noble-updates noble-backports
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg
"""
DEBOOTSTRAP_DEFAULT = "http://debian.mirror.example/debian"


@pytest.fixture
def apt_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty apt configuration (sources.list and sources.list.d), and no MIRROR_ENV."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    (tmp_path / "sources.list.d").mkdir()
    monkeypatch.setattr(debian, "APT_SOURCES", tmp_path / "sources.list")
    monkeypatch.setattr(debian, "APT_SOURCES_DIR", tmp_path / "sources.list.d")
    monkeypatch.setattr(debian, "DEBOOTSTRAP", tmp_path / "no-debootstrap")
    return tmp_path


@pytest.fixture
def ubuntu(apt_sources: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An Ubuntu 24.04 host: its own archive in deb822 form, debootstrap installed."""
    (apt_sources / "sources.list.d" / "ubuntu.sources").write_text(UBUNTU_SOURCES)
    script = apt_sources / "debootstrap"
    script.write_text(f'#!/bin/sh\nVERSION=1.0.134ubuntu1\nDEF_MIRROR="{DEBOOTSTRAP_DEFAULT}"\n')
    monkeypatch.setattr(debian, "DEBOOTSTRAP", script)
    return apt_sources


def test_the_variable_comes_first(apt_sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (apt_sources / "sources.list").write_text("deb http://a.example/debian trixie main\n")
    monkeypatch.setenv(MIRROR_ENV, "http://b.example/debian/")
    assert debian.host_mirror() == "http://b.example/debian"


def test_the_first_debian_source_of_apt(apt_sources: Path) -> None:
    (apt_sources / "sources.list").write_text(
        "deb [signed-by=/k.gpg] http://security.example/debian-security trixie-security main\n"
        "# deb http://old.example/debian trixie main\n"
        "deb [arch=amd64] http://a.example/debian/ trixie main\n"
    )
    assert debian.host_mirror() == "http://a.example/debian"


def test_an_ubuntu_host_is_told_the_variable_and_a_working_example(ubuntu: Path) -> None:
    with pytest.raises(InputError, match="no Debian mirror found") as raised:
        debian.host_mirror()
    hint = raised.value.hint
    assert f"`export {MIRROR_ENV}={DEBOOTSTRAP_DEFAULT}` (debootstrap's own default)" in hint
    assert "--mirror URL" in hint and "README: Ubuntu hosts" in hint


def test_the_example_works_as_given(ubuntu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError) as raised:
        debian.host_mirror()
    name, value = re.search(r"`export (\w+)=(\S+)`", raised.value.hint).groups()  # type: ignore[union-attr]
    monkeypatch.setenv(name, value)
    assert debian.host_mirror() == DEBOOTSTRAP_DEFAULT


def test_without_debootstrap_the_example_says_what_to_fill_in(apt_sources: Path) -> None:
    with pytest.raises(InputError) as raised:
        debian.host_mirror()
    assert f"`export {MIRROR_ENV}=http://MIRROR/debian`" in raised.value.hint
