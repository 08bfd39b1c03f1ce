"""The toolchain lock: the package list round-trips, and differences are listed by package."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import InputError
from builder.stages.toolchain import (
    LockMismatch,
    check_lock,
    differences,
    format_lock,
    parse_inventory,
    read_lock,
)

INVENTORY = ["gcc\t4:14.2.0-1\tamd64", "make\t4.4.1-2\tamd64", "broken line", "tzdata\t2025b\tall"]


def test_roundtrip(tmp_path: Path) -> None:
    packages = parse_inventory(INVENTORY)
    assert packages == {"gcc": "4:14.2.0-1 amd64", "make": "4.4.1-2 amd64", "tzdata": "2025b all"}
    lock = tmp_path / "r.lock"
    lock.write_text(format_lock(packages))
    assert read_lock(lock) == packages
    check_lock(lock, packages)  # no difference, no error


def test_differences_are_named(tmp_path: Path) -> None:
    locked = parse_inventory(INVENTORY)
    actual = dict(locked, gcc="4:14.2.0-2 amd64", ninja="1.12 amd64")
    del actual["make"]
    assert differences(locked, actual) == [
        "~ gcc: lock 4:14.2.0-1 amd64, image 4:14.2.0-2 amd64",
        "- make 4.4.1-2 amd64 (in the lock, not in the image)",
        "+ ninja 1.12 amd64 (in the image, not in the lock)",
    ]
    lock = tmp_path / "r.lock"
    lock.write_text(format_lock(locked))
    with pytest.raises(LockMismatch, match="3 differences") as caught:
        check_lock(lock, actual)
    assert "~ gcc" in str(caught.value) and caught.value.exit_code == 3


def test_missing_and_malformed_lock(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no lock file"):
        read_lock(tmp_path / "absent.lock")
    bad = tmp_path / "bad.lock"
    bad.write_text("gcc\n")
    with pytest.raises(InputError, match=r"bad\.lock:1"):
        read_lock(bad)
