"""Fetching sources: local trees, git tags (a real local repository), tarballs; pins checked."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.config.plan import SourcePlan
from builder.config.settings import MIRROR_ENV
from builder.errors import InputError
from builder.host.cache import Cache
from builder.host.debian import orig_tarball_version, upstream_version
from builder.stages.source import prepare_source, source_version

COMMIT_TIME = 1_700_000_000


def fake_qemu(root: Path) -> Path:
    (root / "qga").mkdir(parents=True)
    (root / "configure").write_text("#!/bin/sh\n")
    (root / "VERSION").write_text("10.0.99\n")
    (root / "qga" / "commands.c").write_text("int x;\n")
    return root


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def members(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return sorted(tar.getnames())


def test_local_tree(tmp_path: Path, cache: Cache) -> None:
    tree = fake_qemu(tmp_path / "qemu")
    os.utime(tree / "VERSION", (COMMIT_TIME, COMMIT_TIME))
    prepared = prepare_source(SourcePlan(kind="local", path=tree), cache, lambda _: None)
    assert prepared.strip_components == 1
    assert "src/qga/commands.c" in members(prepared.archive)
    assert prepared.record["kind"] == "local" and len(prepared.sha256) == 64
    prepared.cleanup()
    assert not prepared.archive.exists()


def test_not_a_qemu_tree(tmp_path: Path, cache: Cache) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="does not look like a QEMU source tree"):
        prepare_source(SourcePlan(kind="local", path=tmp_path / "empty"), cache, lambda _: None)


GIT_ENV = {
    "GIT_AUTHOR_DATE": f"@{COMMIT_TIME}",
    "GIT_COMMITTER_DATE": f"@{COMMIT_TIME}",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def commit_all(repo: Path, tag: str | None = None) -> str:
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "release"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    if tag:
        subprocess.run(["git", "tag", tag], cwd=repo, env=env, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> tuple[Path, str]:
    keycodes = tmp_path / "keycodemapdb"
    keycodes.mkdir()
    (keycodes / "README").write_text("keycodes\n")
    keycodes_commit = commit_all(keycodes)
    repo = fake_qemu(tmp_path / "upstream")
    (repo / "subprojects").mkdir()
    (repo / "subprojects" / "keycodemapdb.wrap").write_text(
        f"[wrap-git]\nurl = file://{keycodes}\nrevision = {keycodes_commit}\ndepth = 1\n"
    )
    return repo, commit_all(repo, tag="v10.0.99")


def test_git_tag_is_cloned_and_pinned(git_repo: tuple[Path, str], cache: Cache) -> None:
    repo, commit = git_repo
    plan = SourcePlan(kind="git", url=f"file://{repo}", tag="v10.0.99", commit=commit)
    prepared = prepare_source(plan, cache, lambda _: None)
    assert prepared.record["commit"] == commit
    assert prepared.newest_mtime == COMMIT_TIME  # SOURCE_DATE_EPOCH from the commit
    assert "src/VERSION" in members(prepared.archive)
    assert not any(".git" in name for name in members(prepared.archive))
    # A git checkout lacks what release tarballs carry: the pinned subproject was fetched.
    assert "src/subprojects/keycodemapdb/README" in members(prepared.archive)
    assert set(prepared.record["subprojects"]) == {"keycodemapdb"}
    prepared.cleanup()


def test_git_tag_that_moved_is_refused(git_repo: tuple[Path, str], cache: Cache) -> None:
    repo, _ = git_repo
    plan = SourcePlan(kind="git", url=f"file://{repo}", tag="v10.0.99", commit="0" * 40)
    with pytest.raises(InputError, match="the recipe pins 0000"):
        prepare_source(plan, cache, lambda _: None)


def test_git_unreachable(tmp_path: Path, cache: Cache) -> None:
    plan = SourcePlan(kind="git", url=f"file://{tmp_path}/nothing", tag="v1")
    with pytest.raises(InputError, match="cannot clone"):
        prepare_source(plan, cache, lambda _: None)


def test_tarball_pinned_by_sha256(tmp_path: Path, cache: Cache) -> None:
    tree = fake_qemu(tmp_path / "qemu-10.0.99")
    tarball = tmp_path / "qemu-10.0.99.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(tree, arcname="qemu-10.0.99")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    prepared = prepare_source(
        SourcePlan(kind="tarball", path=tarball, sha256=digest), cache, lambda _: None
    )
    assert prepared.strip_components == 1 and prepared.record["top_dir"] == "qemu-10.0.99"
    with pytest.raises(InputError, match="sha256 mismatch"):
        prepare_source(
            SourcePlan(kind="tarball", path=tarball, sha256="0" * 64), cache, lambda _: None
        )


def test_tarball_url_unreachable(cache: Cache) -> None:
    plan = SourcePlan(kind="tarball", url="http://127.0.0.1:9/qemu.tar.xz", sha256="0" * 64)
    with pytest.raises(InputError, match="cannot download"):
        prepare_source(plan, cache, lambda _: None)


@pytest.mark.parametrize(
    "debian,upstream",
    [
        ("1:10.0.13+ds-0+deb13u1", "10.0.13+ds"),
        ("7.2+dfsg-7+deb12u18", "7.2+dfsg"),
        ("5.2", "5.2"),
    ],
)
def test_upstream_version(debian: str, upstream: str) -> None:
    assert upstream_version(debian) == upstream


def _repo_with_wrap(tmp_path: Path, wrap: str, packagefiles: dict[str, str] | None = None):
    repo = fake_qemu(tmp_path / "hostile")
    (repo / "subprojects").mkdir()
    (repo / "subprojects" / "keycodemapdb.wrap").write_text(wrap)
    for name, target in (packagefiles or {}).items():
        path = repo / "subprojects" / "packagefiles" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if target.startswith("->"):
            path.symlink_to(target[2:])
        else:
            path.write_text(target)
    return repo, commit_all(repo, tag="v10.0.99")


PWNED = Path("/tmp/qga-builder-test-pwned")


@pytest.mark.parametrize(
    "wrap,words",
    [
        (f"url = --upload-pack=touch {PWNED}\nrevision = {'a' * 40}\n", "not an"),
        (f"url = ext::sh -c touch% {PWNED}\nrevision = {'a' * 40}\n", "not an"),
        (f"url = http://127.0.0.1:9/x.git\nrevision = {'a' * 40}\n", "not an"),
        ("url = file:///nonexistent\nrevision = main\n", "not a 40-hex commit"),
        (f"url = file:///nonexistent\nrevision = --upload-pack=touch {PWNED}\n", "40-hex"),
        (
            f"url = file:///nonexistent\nrevision = {'a' * 40}\npatch_directory = ../../..\n",
            "leaves subprojects/packagefiles",
        ),
    ],
    ids=["upload-pack-url", "ext-url", "http-url", "branch-revision", "option-revision", "dotdot"],
)
def test_a_hostile_wrap_runs_nothing_and_is_refused(
    tmp_path: Path, cache: Cache, wrap: str, words: str
) -> None:
    PWNED.unlink(missing_ok=True)
    repo, commit = _repo_with_wrap(tmp_path, "[wrap-git]\n" + wrap)
    plan = SourcePlan(kind="git", url=f"file://{repo}", tag="v10.0.99", commit=commit)
    with pytest.raises(InputError, match=words) as raised:
        prepare_source(plan, cache, lambda _: None)
    assert "keycodemapdb.wrap" in raised.value.message
    assert not PWNED.exists()


def test_a_wrap_overlay_with_a_link_out_is_refused(tmp_path: Path, cache: Cache) -> None:
    keycodes = tmp_path / "keycodemapdb"
    keycodes.mkdir()
    (keycodes / "README").write_text("keycodes\n")
    pin = commit_all(keycodes)
    wrap = f"[wrap-git]\nurl = file://{keycodes}\nrevision = {pin}\npatch_directory = kc\n"
    repo, commit = _repo_with_wrap(tmp_path, wrap, {"kc/passwd": "->/etc/passwd"})
    plan = SourcePlan(kind="git", url=f"file://{repo}", tag="v10.0.99", commit=commit)
    with pytest.raises(InputError, match="holds a link"):
        prepare_source(plan, cache, lambda _: None)


def test_a_wrap_from_an_https_source_may_not_name_a_local_path(tmp_path: Path) -> None:
    from builder.stages.source import allowed_schemes, check_git_url

    schemes = allowed_schemes("https://gitlab.com/qemu-project/qemu.git")
    check_git_url("https://gitlab.com/qemu-project/keycodemapdb.git", schemes, "wrap")
    with pytest.raises(InputError, match="not an https:// URL"):
        check_git_url("file:///etc", schemes, "wrap")


def test_the_recipes_own_url_must_be_https_or_local(cache: Cache) -> None:
    plan = SourcePlan(kind="git", url="git://example.invalid/qemu.git", tag="v1", commit="a" * 40)
    with pytest.raises(InputError, match=r"source\.git\.url"):
        prepare_source(plan, cache, lambda _: None)


def test_an_unpinned_git_source_warns(git_repo: tuple[Path, str], cache: Cache) -> None:
    repo, _ = git_repo
    said: list[str] = []
    plan = SourcePlan(kind="git", url=f"file://{repo}", tag="v10.0.99")
    prepare_source(plan, cache, said.append).cleanup()
    assert any("no commit" in line and "can move" in line for line in said)


@pytest.mark.parametrize(
    ("debian_version", "release"),
    [
        ("1:10.0.13+ds-0+deb13u1", "10.0.13"),
        ("1:10.2.2+ds-1", "10.2.2"),
        ("1:7.2+dfsg-7+deb12u18", "7.2.0"),  # Debian's X.Y is QEMU's X.Y.0
        ("1:5.2+dfsg-11+deb11u3", "5.2.0"),
        ("1:11.0.0~rc2+ds-1", "11.0.0-rc2"),
        ("1:not-a-release-1", None),
    ],
)
def test_the_release_a_debian_version_packages(debian_version: str, release: str | None) -> None:
    from builder.host.debian import qemu_release

    assert qemu_release(debian_version) == release


def _mirror_with(tmp_path: Path, version: str) -> tuple[Path, str, str]:
    """A file:// mirror whose pool holds qemu_<version>+ds.orig.tar.xz of a fake tree."""
    tree = fake_qemu(tmp_path / f"qemu-{version}")
    (tree / "VERSION").write_text(f"{version}\n")
    pool = tmp_path / "mirror" / "pool" / "main" / "q" / "qemu"
    pool.mkdir(parents=True)
    tarball = pool / f"qemu_{version}+ds.orig.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(tree, arcname=f"qemu-{version}")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    return tmp_path / "mirror", f"pool/main/q/qemu/{tarball.name}", digest


def test_a_mirror_path_is_fetched_from_the_configured_mirror(
    tmp_path: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror, path, digest = _mirror_with(tmp_path, "11.1.1")
    monkeypatch.setenv(MIRROR_ENV, f"file://{mirror}")
    plan = SourcePlan(kind="mirror", mirror_path=path, sha256=digest)
    assert source_version(plan, cache, lambda _: None) == "11.1.1"  # from the name, no fetch
    assert not (cache.sources / "mirror").exists()
    prepared = prepare_source(plan, cache, lambda _: None)
    assert prepared.version.strip() == "11.1.1" and prepared.record["kind"] == "mirror"
    assert prepared.record["path"] == path and prepared.sha256 == digest
    (mirror / path).unlink()  # cached by digest: the second run needs no mirror
    assert prepare_source(plan, cache, lambda _: None).archive == prepared.archive


def test_a_mirror_path_with_another_digest_is_refused_and_not_kept(
    tmp_path: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror, path, _ = _mirror_with(tmp_path, "11.0.3")
    monkeypatch.setenv(MIRROR_ENV, f"file://{mirror}")
    plan = SourcePlan(kind="mirror", mirror_path=path, sha256="0" * 64)
    with pytest.raises(InputError, match=r"source\.mirror: sha256 mismatch"):
        prepare_source(plan, cache, lambda _: None)
    assert not list((cache.sources / "mirror").iterdir())


def test_a_missing_mirror_file_names_the_field(
    tmp_path: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV, f"file://{tmp_path}")
    plan = SourcePlan(
        kind="mirror", mirror_path="pool/main/q/qemu/qemu_11.1.3+ds.orig.tar.xz", sha256="0" * 64
    )
    with pytest.raises(InputError, match=r"source.mirror.path: cannot download"):
        prepare_source(plan, cache, lambda _: None)


def test_a_mirror_file_whose_version_is_not_its_names(
    tmp_path: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror, path, digest = _mirror_with(tmp_path, "11.0.3")
    renamed = path.replace("11.0.3", "11.0.4")
    (mirror / path).rename(mirror / renamed)
    monkeypatch.setenv(MIRROR_ENV, f"file://{mirror}")
    plan = SourcePlan(kind="mirror", mirror_path=renamed, sha256=digest)
    with pytest.raises(InputError, match=r"holds QEMU '11.0.3'.*not 11.0.4"):
        prepare_source(plan, cache, lambda _: None)


@pytest.mark.parametrize(
    "path,version",
    [
        ("pool/main/q/qemu/qemu_11.1.1+ds.orig.tar.xz", "11.1.1+ds"),
        ("pool/main/q/qemu/qemu_7.2+dfsg.orig.tar.xz", "7.2+dfsg"),
        ("pool/main/q/qemu/qemu_11.1.1+ds-1.dsc", ""),
    ],
)
def test_the_version_an_orig_tarballs_name_carries(path: str, version: str) -> None:
    assert orig_tarball_version(path) == version
