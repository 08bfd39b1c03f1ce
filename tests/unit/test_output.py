"""The output directory appears whole or not at all, and one run at a time writes it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.errors import OutputError
from builder.output import OutputDir, stale_staging_dirs


def test_publish_is_a_rename(tmp_path: Path) -> None:
    final = tmp_path / "out" / "linux-static"
    with OutputDir(final, "run1") as out:
        (out.staging / "artifact").write_text("new")
        assert not final.exists()
        out.publish()
    assert (final / "artifact").read_text() == "new"
    assert stale_staging_dirs(final.parent) == []


def test_publish_replaces_an_old_result(tmp_path: Path) -> None:
    final = tmp_path / "linux-static"
    final.mkdir()
    (final / "old").write_text("old")
    with OutputDir(final, "run2") as out:
        (out.staging / "new").write_text("new")
        out.publish()
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert stale_staging_dirs(tmp_path) == []


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "linux-static"
    with pytest.raises(RuntimeError), OutputDir(final, "run3") as out:
        (out.staging / "partial").write_text("x")
        raise RuntimeError("compile failed")
    assert not final.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".linux-static.lock"]


def test_second_writer_is_refused(tmp_path: Path) -> None:
    final = tmp_path / "linux-static"
    expected = f"being written by another run \\(pid {os.getpid()}\\)"
    with OutputDir(final, "a"), pytest.raises(OutputError, match=expected):
        OutputDir(final, "b").__enter__()
    with OutputDir(final, "c") as out:  # the lock is free again
        out.publish()


def test_unwritable_parent(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="cannot write"):
        OutputDir(blocker / "out", "r").__enter__()
