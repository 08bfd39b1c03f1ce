"""Hostile archives: every trick is refused, for source tarballs and for archives coming back."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.errors import ArtifactError, InputError
from builder.formats.archives import Limits, inspect_tarball, safe_extract, tar_directory


def _member(name: str, data: bytes = b"payload", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    for key, value in attrs.items():
        setattr(info, key, value)
    if info.type == tarfile.REGTYPE:
        info.size = len(data)
    else:
        data = b""
    return info, data


HOSTILE: dict[str, Callable[[], list[tuple[tarfile.TarInfo, bytes]]]] = {
    "dotdot path": lambda: [_member("src/../../etc/evil")],
    "absolute path": lambda: [_member("/etc/evil")],
    "symlink outside": lambda: [_member("src/link", type=tarfile.SYMTYPE, linkname="/etc/passwd")],
    "relative symlink outside": lambda: [
        _member("src/link", type=tarfile.SYMTYPE, linkname="../../../etc/passwd")
    ],
    "hard link outside": lambda: [_member("src/hl", type=tarfile.LNKTYPE, linkname="/etc/passwd")],
    "character device": lambda: [_member("src/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)],
    "block device": lambda: [_member("src/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0)],
    "fifo": lambda: [_member("src/fifo", type=tarfile.FIFOTYPE)],
}


def _tar(members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        tar.addfile(*_member("src/", type=tarfile.DIRTYPE, mode=0o755)[:1])
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


@pytest.mark.parametrize("trick", sorted(HOSTILE))
def test_hostile_source_tarball_is_refused(tmp_path: Path, trick: str) -> None:
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(_tar(HOSTILE[trick](), mode="w:gz"))
    with pytest.raises(InputError, match="refused member"):
        inspect_tarball(path, what="source tarball")


@pytest.mark.parametrize("trick", sorted(HOSTILE))
def test_hostile_archive_from_container_is_refused(tmp_path: Path, trick: str) -> None:
    dest = tmp_path / "landing"
    stream = [_tar(HOSTILE[trick]())]  # docker's get_archive yields chunks
    with pytest.raises(ArtifactError, match="refused member"):
        safe_extract(stream, dest, what="artifacts")
    assert not (tmp_path / "etc").exists()
    assert not any(p.is_symlink() and not p.resolve().is_relative_to(dest) for p in dest.rglob("*"))


def test_good_tarball_is_described(tmp_path: Path) -> None:
    path = tmp_path / "good.tar.xz"
    path.write_bytes(
        _tar([_member("src/a.c", mtime=1000), _member("src/b/c.h", mtime=2000)], "w:xz")
    )
    info = inspect_tarball(path, what="source tarball")
    assert info.top_dir == "src"
    assert info.newest_mtime == 2000
    assert info.members == 3


def test_tarball_without_single_top_dir(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("a.c", "b.c"):
            info, data = _member(name)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "flat.tar"
    path.write_bytes(buffer.getvalue())
    assert inspect_tarball(path, what="source tarball").top_dir is None


def test_not_a_tarball(tmp_path: Path) -> None:
    path = tmp_path / "x.tar.xz"
    path.write_bytes(b"this is not xz")
    with pytest.raises(InputError, match="not a readable tar archive"):
        inspect_tarball(path, what="source tarball")


def test_safe_extract_chunks_roundtrip(tmp_path: Path) -> None:
    data = _tar([_member("src/a.txt"), _member("src/b/c.txt")])
    chunks = [data[i : i + 100] for i in range(0, len(data), 100)]
    names = safe_extract(chunks, tmp_path / "out", what="artifacts")
    assert "src/a.txt" in names and "src/b/c.txt" in names
    assert (tmp_path / "out/src/a.txt").read_bytes() == b"payload"


def test_even_a_link_inside_the_archive_is_refused(tmp_path: Path) -> None:
    """Only regular files and directories come back from a container, whatever Python's
    tarfile filter would allow (it allows a link that stays inside)."""
    data = _tar(
        [_member("src/a.txt"), _member("src/inner", type=tarfile.SYMTYPE, linkname="a.txt")]
    )
    with pytest.raises(ArtifactError, match="not a regular file or directory"):
        safe_extract([data], tmp_path / "out", what="artifacts")
    assert not (tmp_path / "out/src/inner").exists()


def test_archives_from_a_container_are_bounded(tmp_path: Path) -> None:
    many = _tar([_member(f"src/f{i}") for i in range(20)])
    with pytest.raises(ArtifactError, match="more than 10 members"):
        safe_extract([many], tmp_path / "a", what="artifacts", limits=Limits(max_members=10))
    big = _tar([_member("src/big", data=b"x" * 5000)])
    with pytest.raises(ArtifactError, match="more than 4096 bytes"):
        safe_extract([big], tmp_path / "b", what="artifacts", limits=Limits(max_bytes=4096))
    twice = _tar([_member("src/a"), _member("src/a")])
    with pytest.raises(ArtifactError, match="appears twice"):
        safe_extract([twice], tmp_path / "c", what="artifacts")


def test_tar_directory_keeps_links_and_drops_git(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / ".git").mkdir(parents=True)
    (tree / ".git" / "HEAD").write_text("ref")
    (tree / "file").write_text("x")
    (tree / "link").symlink_to("file")
    dest = tmp_path / "t.tar"
    tar_directory(tree, dest, arcname="src")
    with tarfile.open(dest) as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert "src/file" in names and names["src/link"].issym()
    assert not any(".git" in name for name in names)
    assert all(m.uid == 0 for m in names.values())
