"""The output directory appears whole or not at all, one run at a time writes it, and the tool
replaces only a directory it can prove it wrote: nothing of the user's is ever deleted."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from builder.errors import OutputError
from builder.formats.checksums import format_sha256sums, sha256_bytes
from builder.formats.manifest import MANIFEST_SCHEMA
from builder.outputs import output_dir as output
from builder.outputs.output_dir import OutputDir


def fake_release(directory: Path, files: dict[str, bytes] | None = None) -> Path:
    """A directory shaped exactly like one the tool publishes."""
    files = files or {"qemu-ga-patched-static": b"\x7fELF agent"}
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / "SHA256SUMS").write_text(
        format_sha256sums({name: sha256_bytes(data) for name, data in files.items()})
    )
    manifest = {"schema": MANIFEST_SCHEMA, "artifacts": [{"name": name} for name in files]}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    (directory / "provenance.intoto.json").write_text("{}")
    (directory / "logs").mkdir()
    (directory / "logs" / "01-source.log").write_text("log\n")
    return directory


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def publish(final: Path, run_id: str, content: bytes = b"new") -> None:
    with OutputDir(final, run_id) as out:
        fake = fake_release(out.staging / ".tmp-build", {"artifact": content})
        for path in fake.iterdir():
            path.rename(out.staging / path.name)
        fake.rmdir()
        out.publish()


def test_publish_is_a_rename(tmp_path: Path) -> None:
    final = tmp_path / "out" / "linux-static"
    with OutputDir(final, "run1") as out:
        (out.staging / "artifact").write_text("new")
        assert not final.exists()
        out.publish()
    assert (final / "artifact").read_text() == "new"
    assert output.leftovers(final) == []
    assert not (final / output.STAGING_MARKER).exists()


def test_publish_replaces_the_tools_own_previous_release(tmp_path: Path) -> None:
    final = tmp_path / "linux-static"
    fake_release(final, {"old-artifact": b"old"})
    publish(final, "run2")
    assert (final / "artifact").read_bytes() == b"new"
    assert not (final / "old-artifact").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".linux-static.lock", "linux-static"]


def test_an_empty_directory_may_be_the_output(tmp_path: Path) -> None:
    final = tmp_path / "made-by-ci"
    final.mkdir()
    publish(final, "run3")
    assert (final / "artifact").read_bytes() == b"new"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: (d.mkdir(), (d / "thesis.odt").write_text("years")), id="user-dir"),
        pytest.param(
            lambda d: (fake_release(d), (d / "notes.txt").write_text("mine")), id="release+file"
        ),
        pytest.param(
            lambda d: (fake_release(d), (d / "qemu-ga-patched-static").write_text("edited")),
            id="edited-artifact",
        ),
        pytest.param(
            lambda d: (fake_release(d), (d / "manifest.json").write_text('{"schema": "x"}')),
            id="foreign-manifest",
        ),
        pytest.param(
            lambda d: (fake_release(d), (d / "logs" / "keep.me").write_text("x")), id="logs-file"
        ),
        pytest.param(lambda d: d.write_text("a file"), id="a-file"),
    ],
)
def test_a_directory_the_tool_did_not_write_is_refused(tmp_path: Path, make) -> None:
    final = tmp_path / "Documents"
    make(final)
    before = snapshot(tmp_path) if final.is_dir() else final.read_bytes()
    with pytest.raises(OutputError, match="not written by qga-builder") as raised:
        OutputDir(final, "run4").__enter__()
    assert raised.value.exit_code == 9
    assert str(final) in raised.value.message
    after = snapshot(tmp_path) if final.is_dir() else final.read_bytes()
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Documents"]  # not even a lock


def test_a_symlink_to_a_users_directory_is_refused(tmp_path: Path) -> None:
    users = tmp_path / "home"
    users.mkdir()
    (users / "photo.jpg").write_bytes(b"\xff\xd8")
    link = tmp_path / "out"
    link.symlink_to(users)
    with pytest.raises(OutputError, match="symbolic link"):
        OutputDir(link, "run5").__enter__()
    assert (users / "photo.jpg").read_bytes() == b"\xff\xd8"
    assert link.is_symlink()


def test_a_symlink_to_a_release_is_refused_too(tmp_path: Path) -> None:
    release = fake_release(tmp_path / "release")
    link = tmp_path / "out"
    link.symlink_to(release)
    with pytest.raises(OutputError, match="symbolic link"):
        OutputDir(link, "run6").__enter__()
    assert output.why_not_ours(release) is None


def test_the_current_directory_and_the_root_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "checkout.py").write_text("code")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="not written by qga-builder"):
        OutputDir(Path("."), "run7").__enter__()
    with pytest.raises(OutputError, match="root"):
        OutputDir(Path("/"), "run7").__enter__()
    assert (tmp_path / "checkout.py").read_text() == "code"


def test_a_planted_symlink_lock_is_refused_not_truncated(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("do not truncate me")
    (tmp_path / ".linux-static.lock").symlink_to(precious)
    with pytest.raises(OutputError, match="symbolic link"):
        OutputDir(tmp_path / "linux-static", "run8").__enter__()
    assert precious.read_text() == "do not truncate me"


def test_a_hard_linked_lock_is_refused(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("do not truncate me")
    os.link(precious, tmp_path / ".linux-static.lock")
    with pytest.raises(OutputError, match="hard link"):
        OutputDir(tmp_path / "linux-static", "run9").__enter__()
    assert precious.read_text() == "do not truncate me"


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "linux-static"
    with pytest.raises(RuntimeError), OutputDir(final, "run10") as out:
        (out.staging / "partial").write_text("x")
        raise RuntimeError("compile failed")
    assert not final.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".linux-static.lock"]


def test_a_file_changed_during_the_run_stops_publish(tmp_path: Path) -> None:
    final = fake_release(tmp_path / "linux-static")
    with (
        pytest.raises(OutputError, match="not written by qga-builder"),
        OutputDir(final, "run11") as out,
    ):
        (final / "added-while-building").write_text("mine")
        out.publish()
    assert (final / "added-while-building").read_text() == "mine"
    assert output.leftovers(final) == []


def test_second_writer_is_refused(tmp_path: Path) -> None:
    final = tmp_path / "linux-static"
    expected = f"being written by another run \\(pid {os.getpid()}\\)"
    with OutputDir(final, "runa"), pytest.raises(OutputError, match=expected):
        OutputDir(final, "runb").__enter__()
    with OutputDir(final, "runc") as out:  # the lock is free again
        out.publish()


def test_unwritable_parent(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="cannot write"):
        OutputDir(blocker / "out", "runr").__enter__()


def _killed_between_renames(final: Path) -> None:
    """Publish without renameat2 (the fallback), SIGKILLed between "old aside" and "new in"."""
    pid = os.fork()
    if pid == 0:  # the child: a run that dies mid-publish
        try:
            output.rename_exchange = lambda a, b: False  # type: ignore[assignment]
            real_rename = os.rename

            def rename_then_die(source: Path, dest: Path) -> None:
                real_rename(source, dest)
                if ".old-" in str(dest):
                    os.kill(os.getpid(), signal.SIGKILL)

            os.rename = rename_then_die  # type: ignore[assignment]
            publish(final, "runkill", b"newer")
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_a_crash_mid_publish_is_completed_by_the_next_run(tmp_path: Path) -> None:
    final = fake_release(tmp_path / "linux-static", {"artifact": b"previous"})
    _killed_between_renames(final)
    assert not final.exists()  # the crash left the name empty ...
    assert len(output.leftovers(final)) == 2  # ... the new release staged, the old one aside
    with OutputDir(final, "runnext"):
        # ... and the next run completes the publish before it does anything else.
        assert (final / "artifact").read_bytes() == b"newer"
    assert output.leftovers(final) == []


def test_a_crash_mid_publish_is_repaired_by_clean(tmp_path: Path) -> None:
    from builder.commands.clean import _clean_staging

    final = fake_release(tmp_path / "linux-static", {"artifact": b"previous"})
    _killed_between_renames(final)
    assert _clean_staging(tmp_path, dry_run=True)  # lists, changes nothing
    assert not final.exists()
    said = _clean_staging(tmp_path, dry_run=False)
    assert any("restore" in line for line in said)
    assert (final / "artifact").read_bytes() == b"newer"
    assert output.leftovers(final) == []


def test_the_previous_release_survives_a_crash_before_publish(tmp_path: Path) -> None:
    final = fake_release(tmp_path / "linux-static", {"artifact": b"previous"})
    pid = os.fork()
    if pid == 0:
        try:
            with OutputDir(final, "runcrash") as out:
                (out.staging / "artifact").write_bytes(b"half")
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(3)
    os.waitpid(pid, 0)
    assert (final / "artifact").read_bytes() == b"previous"
    with OutputDir(final, "runafter"):
        pass
    assert output.leftovers(final) == []  # the staging of the killed run is gone
    assert (final / "artifact").read_bytes() == b"previous"


def test_hidden_directories_that_merely_look_like_leftovers_stay(tmp_path: Path) -> None:
    from builder.commands.clean import _clean_staging

    lookalikes = [
        tmp_path / ".config.tmp-backup",  # not a run id
        tmp_path / ".photos.old-2019",  # a user's, no marker, not a release
        tmp_path / ".mail.tmp-abcdef123456",  # exact naming, but no marker: not provably ours
    ]
    for path in lookalikes:
        path.mkdir()
        (path / "data").write_text("mine")
    (tmp_path / ".mail.lock").write_text("a user's lock file, not the tool's")
    _clean_staging(tmp_path, dry_run=False)
    for path in lookalikes:
        assert (path / "data").read_text() == "mine"
    assert (tmp_path / ".mail.lock").read_text() == "a user's lock file, not the tool's"
