"""Hostile archives: every trick is refused, for source tarballs and for archives coming back.

Source tarballs are checked with tarfile's data filter where Python has it (3.11.4 and later) and
with our copy of its rules otherwise (Debian 12's 3.11.2): the tests run over both, so ours is
tested on every Python, and against the standard library's where there is one.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder.errors import ArtifactError, InputError
from builder.formats import archives
from builder.formats.archives import Limits, inspect_tarball, safe_extract, tar_directory
from builder.formats.tar_filter import FILTER_ERRORS, Filter, fallback_data_filter

# Python's own filter (None before 3.11.4) and ours.
FILTERS: dict[str, Filter | None] = {
    "tarfile": getattr(tarfile, "data_filter", None),
    "ours": fallback_data_filter,
}
DEST = "/nonexistent-extraction-root"


@pytest.fixture(params=sorted(FILTERS))
def data_filter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Filter:
    """Each implementation in turn, also as the one inspect_tarball uses."""
    chosen = FILTERS[request.param]
    if chosen is None:
        pytest.skip("this Python's tarfile has no data_filter (it came with 3.11.4)")
    monkeypatch.setattr(archives, "DATA_FILTER", chosen)
    return chosen


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
def test_hostile_source_tarball_is_refused(tmp_path: Path, trick: str, data_filter: Filter) -> None:
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(_tar(HOSTILE[trick](), mode="w:gz"))
    with pytest.raises(InputError, match="refused member"):
        inspect_tarball(path, what="source tarball")


@pytest.mark.parametrize("trick", sorted(HOSTILE))
def test_the_filter_itself_refuses_every_trick(trick: str, data_filter: Filter) -> None:
    """The same members straight into the filter (inspect_tarball refuses some before it)."""
    for member, _ in HOSTILE[trick]():
        if trick == "absolute path":  # the filter makes it relative; inspect_tarball refuses it
            assert data_filter(member, DEST).name == "etc/evil"
            continue
        with pytest.raises(FILTER_ERRORS):
            data_filter(member, DEST)


def _typed(kind: bytes, mode: int, **attrs: object) -> tarfile.TarInfo:
    links = {tarfile.SYMTYPE: "a.c", tarfile.LNKTYPE: "src/a.c"}
    return _member("src/x", type=kind, mode=mode, linkname=links.get(kind, ""), **attrs)[0]


@pytest.mark.parametrize(
    ("kind", "mode", "kept"),
    [
        pytest.param(tarfile.REGTYPE, 0o4755, 0o755, id="setuid"),
        pytest.param(tarfile.REGTYPE, 0o2775, 0o755, id="setgid, group write"),
        pytest.param(tarfile.REGTYPE, 0o1777, 0o755, id="sticky, group and other write"),
        pytest.param(tarfile.REGTYPE, 0o666, 0o644, id="file"),
        pytest.param(tarfile.REGTYPE, 0o055, 0o644, id="not executable by its owner"),
        pytest.param(tarfile.REGTYPE, 0o000, 0o600, id="owner can always read and write"),
        pytest.param(tarfile.REGTYPE, 0o500, 0o700, id="owner-only program"),
        pytest.param(tarfile.LNKTYPE, 0o6711, 0o711, id="hard link is a file"),
        pytest.param(tarfile.DIRTYPE, 0o1777, None, id="directory: not applied"),
        pytest.param(tarfile.SYMTYPE, 0o777, None, id="symlink: not applied"),
    ],
)
def test_the_filter_limits_modes(
    kind: bytes, mode: int, kept: int | None, data_filter: Filter
) -> None:
    assert data_filter(_typed(kind, mode), DEST).mode == kept


def test_the_filter_takes_no_owner_from_the_archive(data_filter: Filter) -> None:
    owned = _typed(tarfile.REGTYPE, 0o644, uid=1000, gid=1000, uname="eve", gname="eve")
    filtered = data_filter(owned, DEST)
    assert (filtered.uid, filtered.gid, filtered.uname, filtered.gname) == (None,) * 4
    assert owned.uid == 1000  # the archive's own member is left as it was


KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE]
KINDS += [tarfile.BLKTYPE, tarfile.FIFOTYPE]


def _outcome(chosen: Filter, member: tarfile.TarInfo) -> tuple[object, ...]:
    try:
        kept = chosen(member, DEST)
    except FILTER_ERRORS:
        return ("refused",)
    return (kept.name, kept.mode, kept.uid, kept.gid, kept.uname, kept.gname)


@pytest.mark.skipif(FILTERS["tarfile"] is None, reason="no tarfile.data_filter to compare with")
@given(
    name=st.sampled_from(["src/x", "/src/x", "src/../x", "src/../../x", "./x", "a/b/../../.."]),
    kind=st.sampled_from(KINDS),
    mode=st.integers(0, 0o7777),
    linkname=st.sampled_from(["a", "../a", "../../a", "/a", "src/../a", "x/../../a"]),
)
def test_ours_agrees_with_pythons(name: str, kind: bytes, mode: int, linkname: str) -> None:
    member = tarfile.TarInfo(name)
    member.type, member.mode, member.linkname = kind, mode, linkname
    member.uid, member.uname = 1000, "eve"
    assert FILTERS["tarfile"] is not None
    assert _outcome(fallback_data_filter, member) == _outcome(FILTERS["tarfile"], member)


@pytest.mark.parametrize("trick", sorted(HOSTILE))
def test_hostile_archive_from_container_is_refused(tmp_path: Path, trick: str) -> None:
    dest = tmp_path / "landing"
    stream = [_tar(HOSTILE[trick]())]  # docker's get_archive yields chunks
    with pytest.raises(ArtifactError, match="refused member"):
        safe_extract(stream, dest, what="artifacts")
    assert not (tmp_path / "etc").exists()
    assert not any(p.is_symlink() and not p.resolve().is_relative_to(dest) for p in dest.rglob("*"))


def test_good_tarball_is_described(tmp_path: Path, data_filter: Filter) -> None:
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
