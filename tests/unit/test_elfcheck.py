"""The ELF check reads headers: real static and dynamic binaries made by the host's gcc."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.formats.elf import ElfFormatError, parse_elf, read_elf


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("elf")
    source = work / "hello.c"
    source.write_text('#include <stdio.h>\nint main(void){puts("hi");return 0;}\n')
    out = {}
    for name, flags in {
        "dynamic": [],
        "static": ["-static"],
        "static-pie": ["-static-pie", "-fPIE"],
    }.items():
        path = work / name
        subprocess.run(["gcc", *flags, "-o", str(path), str(source)], check=True)
        out[name] = path
        stripped = work / f"{name}-stripped"
        subprocess.run(["strip", "-o", str(stripped), str(path)], check=True)
        out[f"{name}-stripped"] = stripped
    return out


def test_dynamic_binary_is_not_static(binaries: dict[str, Path]) -> None:
    info = read_elf(binaries["dynamic"])
    assert info.interpreter and "ld-linux" in info.interpreter
    assert info.needed  # libc.so.6
    assert not info.is_static


@pytest.mark.parametrize("kind", ["static", "static-pie"])
def test_static_binaries(binaries: dict[str, Path], kind: str) -> None:
    info = read_elf(binaries[kind])
    assert info.is_static
    assert not info.is_stripped
    assert read_elf(binaries[f"{kind}-stripped"]).is_stripped


def test_static_pie_is_described(binaries: dict[str, Path]) -> None:
    assert read_elf(binaries["static-pie-stripped"]).describe() == "ELF64 static-pie, stripped"


def test_not_elf() -> None:
    with pytest.raises(ElfFormatError, match="not an ELF"):
        parse_elf(b"#!/bin/sh\n")


def test_truncated(binaries: dict[str, Path]) -> None:
    with pytest.raises(ElfFormatError):
        parse_elf(binaries["static"].read_bytes()[:80])
