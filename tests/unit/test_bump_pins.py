"""`bump` beyond a recipe's QEMU pin, on the test mirror of test_bump.py (an index signed by the
test's own key, file:// under tmp_path): Dockerfile.mingw's Debian source pins, the libraries
the static Linux agent links against a recipe's lock, and a series newer than any patch set.
No network, no Docker."""

from __future__ import annotations

import gzip
import json
import lzma
import os
from pathlib import Path

import pytest

from builder.commands import bump_locks
from builder.config import dockerfile_pins, recipe_pins
from builder.errors import InputError
from builder.host.debian_index import binary_versions, packages_indexes
from builder.stages import series, toolchain
from tests.helpers import ROOT
from tests.unit import test_bump
from tests.unit.test_bump import (
    OWN_PATCH,
    Listed,
    Mirror,
    bump_cli,
    changed_lines,
    debian_recipe,
    mirror_recipe,
)

# test_bump's fixtures: its throwaway key, and the mirror laid out and signed with it
gnupg = test_bump.gnupg
mirror = test_bump.mirror
patches_apply = test_bump.patches_apply

# --- Dockerfile.mingw's source pins --------------------------------------------------------------

# The six pins of Dockerfile.mingw, as the test's mirror lists them (its own small tarballs).
PINNED = {
    "GLIB": ("glib2.0", "2.84.4-3~deb13u5", ".orig.tar.xz"),
    "PCRE2": ("pcre2", "10.46-1~deb13u3", ".orig.tar.gz"),
    "LIBFFI": ("libffi", "3.4.8-2", ".orig.tar.gz"),
    "GETTEXT": ("gettext", "0.23.1-2", ".orig.tar.xz"),
    "MINGW_W64": ("mingw-w64", "12.0.0-5", ".orig.tar.bz2"),
    "WINE": ("wine", "10.0~repack-6", ".orig.tar.xz"),
}
WINDOWS_RECIPE = """\
name: win
target: windows
environment:
  dockerfile: ../Dockerfile.mingw
  base:
    debootstrap: {suite: trixie, variant: minbase}
  packages: [gcc-mingw-w64-x86-64-posix]
source:
  local:
    path: /nonexistent/qemu
patches: []
build:
  targets: [qemu-ga]
artifacts:
  - path: qga/qemu-ga.exe
    name: qemu-ga.exe
    kind: pe
    strip: false
"""


def mingw_project(tmp_path: Path, mirror: Mirror, suite: str = "trixie") -> Path:
    """A project whose Dockerfile.mingw (the real one) pins the mirror's own tarballs, and a
    Windows recipe that builds in it on `suite`. The suite is not published yet."""
    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text("")
    values = {}
    for name, (package, version, suffix) in PINNED.items():
        listed = mirror.add_source(package, version, suite, suffix)
        values |= {f"{name}_VERSION": version, f"{name}_SHA256": listed.files[listed.orig]}
    text = (ROOT / "Dockerfile.mingw").read_text()
    dockerfile = project / "Dockerfile.mingw"
    dockerfile.write_text(dockerfile_pins.rewritten(text, values))
    (project / "recipes" / "win.yaml").write_text(WINDOWS_RECIPE.replace("trixie", suite))
    return dockerfile


def orig_sha(listed: Listed) -> str:
    return listed.files[listed.orig]


def test_the_real_dockerfile_mingw_has_six_pins_bump_can_read() -> None:
    pins = dockerfile_pins.read_pins((ROOT / "Dockerfile.mingw").read_text(), "Dockerfile.mingw")
    assert [(p.name, p.package, p.suffix) for p in pins] == [
        (name, package, suffix) for name, (package, _, suffix) in PINNED.items()
    ]
    glib = pins[0]
    assert glib.orig_name() == "glib2.0_2.84.4.orig.tar.xz"
    assert glib.orig_name("2.86.0-1") == "glib2.0_2.86.0.orig.tar.xz"


def test_a_pin_the_dockerfile_does_not_use_as_one_is_refused() -> None:
    text = "ARG FOO_VERSION=1.0-1\nARG FOO_SHA256=" + "a" * 64 + "\nRUN echo $FOO_VERSION\n"
    with pytest.raises(InputError, match="no source pin bump can read"):
        dockerfile_pins.read_pins(text, "Dockerfile")
    assert dockerfile_pins.read_pins("ARG SOURCE_DATE_EPOCH=1\nARG X_VERSION=1\n", "D") == []


def test_dockerfile_pins_move_and_every_other_byte_stays(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new Debian revision (same orig tarball: the version alone changes) and a new upstream
    version (a new orig tarball, downloaded and checked against its .dsc)."""
    dockerfile = mingw_project(tmp_path, mirror)
    mirror.add_source("glib2.0", "2.84.4-3~deb13u6", "trixie")
    pcre2 = mirror.add_source("pcre2", "10.47-1", "trixie", ".orig.tar.gz")
    mirror.add_source("pcre2", "10.45-1", "trixie", ".orig.tar.gz")  # older: never a candidate
    mirror.publish("trixie", "trixie")
    before = dockerfile.read_text()
    old_pcre2 = [line for line in before.splitlines(keepends=True) if "PCRE2_SHA256=" in line]

    assert bump_cli(mirror, str(dockerfile), "--write") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert (
        f"{dockerfile}: glib2.0 2.84.4-3~deb13u5 -> 2.84.4-3~deb13u6 (trixie's; the same orig "
        "tarball glib2.0_2.84.4.orig.tar.xz, sha256 unchanged: only GLIB_VERSION changes)" in out
    )
    assert (
        f"{dockerfile}: pcre2 10.46-1~deb13u3 -> 10.47-1 (trixie's; orig tarball "
        f"pcre2_10.47.orig.tar.gz, sha256 {orig_sha(pcre2)})" in out
    )
    assert f"{dockerfile}: libffi up to date (3.4.8-2)" in out
    assert f"{dockerfile}: 2 of its 6 source pins move; written" in out
    assert changed_lines(before, dockerfile.read_text()) == [
        ("ARG GLIB_VERSION=2.84.4-3~deb13u5\n", "ARG GLIB_VERSION=2.84.4-3~deb13u6\n"),
        ("ARG PCRE2_VERSION=10.46-1~deb13u3\n", "ARG PCRE2_VERSION=10.47-1\n"),
        (old_pcre2[0], f"ARG PCRE2_SHA256={orig_sha(pcre2)}\n"),
    ]
    cached = tmp_path / "cache" / "sources" / "mirror"
    assert [p.name for p in cached.iterdir()] == [f"{orig_sha(pcre2)[:16]}-{pcre2.orig}"]
    assert sorted(p.name for p in dockerfile.parent.iterdir()) == [
        "Dockerfile.mingw",
        "pyproject.toml",
        "recipes",
    ]  # no temporary left
    assert bump_cli(mirror, str(dockerfile)) == 0
    assert f"{dockerfile}: its 6 source pins are up to date (trixie)" in capsys.readouterr().out


def test_the_default_run_takes_the_dockerfiles_the_recipes_build_in(
    tmp_path: Path,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dockerfile = mingw_project(tmp_path, mirror)
    new = mirror.add_source("libffi", "3.5.0-1", "trixie", ".orig.tar.gz")
    mirror.publish("trixie", "trixie")
    monkeypatch.chdir(dockerfile.parent)
    assert bump_cli(mirror, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    (recipe,) = document["recipes"]
    assert recipe["status"] == "not-debian" and document["locks"] == []  # a Windows recipe
    (found,) = document["dockerfiles"]
    assert found["dockerfile"] == "Dockerfile.mingw" and found["status"] == "bumped"
    assert found["suite"] == "trixie" and not found["written"]
    libffi = next(pin for pin in found["pins"] if pin["package"] == "libffi")
    assert libffi["status"] == "bumped" and libffi["orig_changed"]
    assert (libffi["new_version"], libffi["new_sha256"]) == ("3.5.0-1", orig_sha(new))


@pytest.mark.parametrize("tampered", ["dsc", "orig"])
def test_a_tampered_file_leaves_the_dockerfile_as_it_was(
    tmp_path: Path, mirror: Mirror, tampered: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One pin refused: no pin is written, not even the one that verified."""
    dockerfile = mingw_project(tmp_path, mirror)
    mirror.add_source("glib2.0", "2.84.4-3~deb13u6", "trixie")  # fine on its own
    pcre2 = mirror.add_source("pcre2", "10.47-1", "trixie", ".orig.tar.gz")
    mirror.publish("trixie", "trixie")
    pool = mirror.root / pcre2.directory
    if tampered == "dsc":
        with (pool / pcre2.dsc).open("a") as dsc:
            dsc.write("Comment: changed after the index was signed\n")
    else:
        (pool / pcre2.orig).write_bytes(b"not the tarball the .dsc names")
    before = dockerfile.read_bytes()
    assert bump_cli(mirror, str(dockerfile), "--write") == 3
    captured = capsys.readouterr()
    said = "verified Sources gives" if tampered == "dsc" else "which its verified .dsc gives"
    assert f"{dockerfile}: pcre2: refused: " in captured.out and said in captured.out
    assert f"{dockerfile}: refused: 1 of its pins (above); left as it was" in captured.out
    assert "bump refused 1 of 1 Dockerfile(s)" in captured.err
    assert dockerfile.read_bytes() == before
    cached = tmp_path / "cache" / "sources" / "mirror"
    assert not cached.exists() or not list(cached.iterdir())  # no partial tarball kept


def test_a_listed_dockerfile_version_whose_files_are_missing_is_skipped(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    dockerfile = mingw_project(tmp_path, mirror)
    mirror.add_source("glib2.0", "2.84.4-3~deb13u6", "trixie")
    gone = mirror.add_source("glib2.0", "2.86.0-1", "trixie")
    mirror.publish("trixie", "trixie")
    (mirror.root / gone.directory / gone.dsc).unlink()
    assert bump_cli(mirror, str(dockerfile), "--write") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert (
        f"{dockerfile}: skipped glib2.0 2.86.0-1: listed in trixie's Sources but its files are "
        "missing" in out
    )
    assert "ARG GLIB_VERSION=2.84.4-3~deb13u6\n" in dockerfile.read_text()


def test_a_new_orig_tarball_name_the_dockerfile_does_not_check_is_refused(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    """libffi's check names libffi_${V%-*}.orig.tar.gz: a release shipped as .tar.xz would
    fail the image's sha256sum -c, so bump refuses rather than write it."""
    dockerfile = mingw_project(tmp_path, mirror)
    mirror.add_source("libffi", "3.5.0-1", "trixie", ".orig.tar.xz")
    mirror.publish("trixie", "trixie")
    before = dockerfile.read_bytes()
    assert bump_cli(mirror, str(dockerfile), "--write") == 3
    out = capsys.readouterr().out
    assert "names the orig tarball libffi_3.5.0.orig.tar.xz, but Dockerfile.mingw checks" in out
    assert dockerfile.read_bytes() == before


def test_the_dockerfile_rewrite_is_atomic(
    tmp_path: Path,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The rename that would replace the file fails: the file is as it was, no copy is left."""
    dockerfile = mingw_project(tmp_path, mirror)
    mirror.add_source("glib2.0", "2.84.4-3~deb13u6", "trixie")
    mirror.publish("trixie", "trixie")
    before = dockerfile.read_bytes()

    def failing_replace(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recipe_pins.os, "replace", failing_replace)
    assert bump_cli(mirror, str(dockerfile), "--write") == 3
    assert "No space left on device" in capsys.readouterr().out
    assert dockerfile.read_bytes() == before
    assert sorted(p.name for p in dockerfile.parent.iterdir()) == [
        "Dockerfile.mingw",
        "pyproject.toml",
        "recipes",
    ]


def test_a_newer_version_in_the_updates_suite_is_said_not_taken(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    """The image's apt sees the suite only (debootstrap's sources.list): trixie-updates' version
    is reported, and the pin stays on what trixie lists."""
    dockerfile = mingw_project(tmp_path, mirror)
    mirror.add_source("glib2.0", "2.84.4-3~deb13u7", "trixie-updates")
    mirror.publish("trixie", "trixie")
    mirror.publish("trixie-updates", "trixie-updates")
    assert bump_cli(mirror, str(dockerfile)) == 0
    out = capsys.readouterr().out
    assert (
        f"{dockerfile}: glib2.0 2.84.4-3~deb13u7 is in trixie-updates, not taken: the image's "
        "apt sources name trixie only" in out
    )
    assert f"{dockerfile}: glib2.0 up to date (2.84.4-3~deb13u5)" in out


def test_a_dockerfile_no_recipe_builds_in_is_refused(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    dockerfile = mingw_project(tmp_path, mirror)
    (dockerfile.parent / "recipes" / "win.yaml").unlink()
    mirror.publish("trixie", "trixie")
    assert bump_cli(mirror, str(dockerfile)) == 3
    assert "its image is made from no Debian suite" in capsys.readouterr().out


# --- the libraries the static Linux agent links, against the recipe's lock -----------------------

TRIXIE_NOW = {
    "libc6-dev": "2.41-12+deb13u5",
    "libglib2.0-dev": "2.84.4-3~deb13u6",
    "libpcre2-dev": "10.46-1~deb13u3",
    "zlib1g-dev": "1:1.3.dfsg+really1.3.1-1+deb13u1",
}


def write_lock(recipe: Path, packages: dict[str, str]) -> Path:
    lock = recipe.with_suffix(".lock")
    lock.write_text(toolchain.format_lock({k: f"{v} amd64" for k, v in packages.items()}))
    return lock


def linux_recipe(tmp_path: Path, mirror: Mirror) -> Path:
    """A static Linux recipe pinned in trixie (the series' base: its image is trixie's)."""
    current = mirror.add("1:10.0.13+ds-0+deb13u1", "trixie")
    mirror.binaries["trixie"] = dict(TRIXIE_NOW)
    mirror.publish("trixie", "trixie")
    return debian_recipe(tmp_path, current)


def test_a_lock_behind_its_suite_is_reported_with_the_commands_that_remake_it(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = linux_recipe(tmp_path, mirror)
    lock = write_lock(recipe, TRIXIE_NOW | {"libglib2.0-dev": "2.84.4-3~deb13u5", "gcc": "4:14"})
    before = lock.read_bytes()
    assert bump_cli(mirror, str(recipe)) == 14
    captured = capsys.readouterr()
    command = (
        "qga-builder clean --keep 0 --repository qga-builder/dockerfile.linux && "
        f"qga-builder lock {recipe}"
    )
    assert (
        f"{recipe}: update of a library the agent links, in trixie: libglib2.0-dev "
        "2.84.4-3~deb13u5 -> 2.84.4-3~deb13u6;" in captured.out
    )
    assert f"run `{command}`" in captured.out
    assert "bump found 1 lock(s) or cached guest(s) behind their suite's updates" in captured.err
    assert lock.read_bytes() == before  # a dry run writes no lock
    assert bump_cli(mirror, str(recipe), "--json") == 14
    (document,) = json.loads(capsys.readouterr().out)["locks"]
    assert document["status"] == "stale" and document["command"] == command
    assert document["updates"] == [
        {"package": "libglib2.0-dev", "locked": "2.84.4-3~deb13u5", "suite": "2.84.4-3~deb13u6"}
    ]


def test_a_current_lock_and_a_recipe_without_one(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = linux_recipe(tmp_path, mirror)
    assert bump_cli(mirror, str(recipe)) == 0
    out = capsys.readouterr().out
    assert f"{recipe}: not locked: its build image takes trixie's current versions" in out
    assert "(libc6-dev 2.41-12+deb13u5, libglib2.0-dev 2.84.4-3~deb13u6," in out
    assert "cannot be known without the engine" in out
    write_lock(recipe, TRIXIE_NOW)
    assert bump_cli(mirror, str(recipe)) == 0
    assert f"{recipe}: bump-debian.lock has trixie's versions of the libraries" in (
        capsys.readouterr().out
    )


def test_a_packages_index_whose_sha256_is_not_the_inreleases_is_refused(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = linux_recipe(tmp_path, mirror)
    packages = mirror.root / "dists" / "trixie" / "main" / "binary-amd64" / "Packages.xz"
    packages.write_bytes(lzma.compress(b"Package: libglib2.0-dev\nVersion: 9.9-1\n"))
    assert bump_cli(mirror, str(recipe)) == 3
    captured = capsys.readouterr()
    assert "linked libraries: refused: trixie's main/binary-amd64/Packages.xz: sha256" in (
        captured.out
    )
    assert "bump refused 1 of 1 lock check(s)" in captured.err


def test_a_suite_the_mirror_lacks_skips_the_lock_check(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The QEMU pin is searched in unstable; the image's suite (trixie) is not on the mirror."""
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    recipe = mirror_recipe(tmp_path, current)
    assert bump_cli(mirror, str(recipe)) == 0
    assert f"{recipe}: linked libraries not checked: the mirror has no" in capsys.readouterr().out


def test_a_packages_index_is_read_for_the_packages_asked_only() -> None:
    text = (
        "Package: libglib2.0-dev\nSource: glib2.0\nVersion: 2.84.4-3~deb13u5\n\n"
        "Package: libglib2.0-dev-bin\nVersion: 9.0-1\n\n"
        "Package: libglib2.0-dev\nVersion: 2.84.4-3~deb13u6\nDescription: x\n more\n\n"
        "Package: zlib1g-dev\nVersion: not a version!\n \n"  # a separator of white space
        "Architecture: amd64\nPackage: libc6-dev\nVersion: 2.41-12\n\n"  # Package not first
        "Package: libc6-dev-x32\nVersion: 9.9-9\n"
    )
    assert binary_versions(text, ["libglib2.0-dev", "zlib1g-dev", "libc6-dev"]) == {
        "libglib2.0-dev": "2.84.4-3~deb13u6",
        "libc6-dev": "2.41-12",
    }
    names = [name for name, _ in packages_indexes("amd64")]
    assert names == [
        "main/binary-amd64/Packages.xz",
        "main/binary-amd64/Packages.gz",
        "main/binary-amd64/Packages",
    ]
    unpack = dict(packages_indexes("amd64"))["main/binary-amd64/Packages.gz"]
    assert unpack(gzip.compress(text.encode())) == text.encode()


# --- a series newer than any patch set -----------------------------------------------------------


@pytest.fixture
def own_patch_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Our newest patch set stands as one patch of the test's (the real ones touch files the
    test's tarballs lack); the trial itself is the real one."""
    patch = tmp_path / "0001-ours.patch"
    patch.write_text(OWN_PATCH)
    monkeypatch.setattr(series, "patch_set", lambda name: [patch])
    return patch


def test_a_newer_series_is_reported_with_whether_our_newest_set_applies(
    tmp_path: Path,
    mirror: Mirror,
    patches_apply: None,
    own_patch_set: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.add("1:99.0.0+ds-1", "unstable")
    gone = mirror.add("1:99.0.1+ds-1", "unstable")  # the newest listed: its files are missing
    mirror.publish("unstable", "sid")
    (mirror.pool / gone.dsc).unlink()
    recipe = mirror_recipe(tmp_path, current)
    newest = series.supported_series()[-1]
    assert bump_cli(mirror, str(recipe)) == 0
    assert (
        "QEMU 99.0.1 is out (Debian 1:99.0.1+ds-1 in unstable): no patch set of ours for 99.0; "
        f"the newest is {newest} (patches/qemu-{newest}/); patches/qemu-{newest}/ applies to "
        "99.0.0's verified orig tarball (Debian 1:99.0.0+ds-1): all 1 patches"
        in capsys.readouterr().out
    )
    assert bump_cli(mirror, str(recipe), "--json") == 0
    (check,) = json.loads(capsys.readouterr().out)["newer_series_checks"]
    assert check["applies"] is True and check["skipped"] == ["1:99.0.1+ds-1"]
    assert check["tried"]["debian_version"] == "1:99.0.0+ds-1"
    assert check["patches"] == [{"name": "0001-ours.patch", "applies": True, "detail": "applies"}]


def test_a_newer_series_our_set_does_not_apply_to(
    tmp_path: Path,
    mirror: Mirror,
    patches_apply: None,
    own_patch_set: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.add("1:99.0.0+ds-1", "unstable", main_c="/* rewritten upstream */\n")
    mirror.publish("unstable", "sid")
    recipe = mirror_recipe(tmp_path, current)
    assert bump_cli(mirror, str(recipe)) == 0  # a note: nothing of ours to refuse
    out = capsys.readouterr().out
    assert "does not apply to 99.0.0's verified orig tarball (Debian 1:99.0.0+ds-1): " in out
    assert "0001-ours.patch: qga/main.c: hunk #1" in out


def test_a_newer_series_whose_tarball_is_tampered_is_not_tried(
    tmp_path: Path,
    mirror: Mirror,
    patches_apply: None,
    own_patch_set: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    newer = mirror.add("1:99.0.0+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    (mirror.pool / newer.orig).write_bytes(b"not the tarball the .dsc names")
    recipe = mirror_recipe(tmp_path, current)
    assert bump_cli(mirror, str(recipe)) == 0
    out = capsys.readouterr().out
    assert "no patch set of ours for 99.0" in out
    assert "; not tried: qemu_99.0.0+ds.orig.tar.xz: sha256" in out


def test_the_real_newest_set_on_a_tarball_without_its_files_does_not_apply(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.add("1:99.0.0+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    recipe = mirror_recipe(tmp_path, current)
    assert bump_cli(mirror, str(recipe)) == 0
    newest = series.supported_series()[-1]
    assert f"patches/qemu-{newest}/ does not apply to 99.0.0's verified orig tarball" in (
        capsys.readouterr().out
    )


def test_write_checked_leaves_no_copy_when_the_check_fails(tmp_path: Path) -> None:
    target = tmp_path / "Dockerfile"
    target.write_text("ARG A_VERSION=1\n")

    def refuse(path: Path) -> None:
        raise InputError("no")

    with pytest.raises(InputError):
        recipe_pins.write_checked(target, "ARG A_VERSION=2\n", refuse)
    assert target.read_text() == "ARG A_VERSION=1\n" and os.listdir(tmp_path) == ["Dockerfile"]


# --- vm-test's cached guests ---------------------------------------------------------------------

GUEST_NOW = {
    "linux-image-amd64": "6.12.117-1",
    "systemd": "257.13-1~deb13u1",
    "udev": "257.13-1~deb13u1",
    "libc6": "2.41-12+deb13u5",
}


def cached_guest(tmp_path: Path, init: str, key: str, packages: dict[str, str]) -> Path:
    """A guest disk entry as vm-test leaves it (only what bump reads of it)."""
    entry = tmp_path / "cache" / "vm" / "guests" / f"{init}-{key[:24]}"
    entry.mkdir(parents=True)
    (entry / "packages.txt").write_text("".join(f"{n}\t{v}\n" for n, v in packages.items()))
    (entry / ".complete").write_text(f"sha256:{key}\n")
    return entry


def test_a_cached_guest_behind_its_suite_is_reported_with_the_command_that_remakes_it(
    tmp_path: Path,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = linux_recipe(tmp_path, mirror)
    monkeypatch.chdir(recipe.parent.parent)  # the whole project: guests are checked
    mirror.binaries["trixie"] = TRIXIE_NOW | GUEST_NOW | {"linux-image-amd64": "6.12.120-1"}
    mirror.publish("trixie", "trixie")
    old = cached_guest(tmp_path, "systemd", "a" * 64, GUEST_NOW | {"linux-image-amd64": "6.12.1-1"})
    os.utime(old / ".complete", (1, 1))  # older than the next: not the one vm-test uses
    cached_guest(tmp_path, "systemd", "b" * 64, GUEST_NOW)
    assert bump_cli(mirror, str(recipe)) == 0  # a recipe named: its pins only
    assert "vm-test" not in capsys.readouterr().out
    assert bump_cli(mirror) == 14
    captured = capsys.readouterr()
    command = "qga-builder clean --keep 0 --repository qga-builder/guest-systemd"
    assert (
        f"vm-test systemd guest (systemd-{'b' * 24}): update in trixie: linux-image-amd64 "
        f"6.12.117-1 -> 6.12.120-1; the cached guest has the older: bump remakes no guest; "
        f"run `{command}`" in captured.out
    )
    assert "vm-test sysvinit guest: none made yet here" in captured.out
    assert "the vm-test systemd guest" in captured.err
    assert bump_cli(mirror, "--json") == 14
    systemd, sysvinit = json.loads(capsys.readouterr().out)["guests"]
    assert systemd["status"] == "stale" and systemd["command"] == command
    assert systemd["updates"] == [
        {"package": "linux-image-amd64", "guest": "6.12.117-1", "suite": "6.12.120-1"}
    ]
    assert sysvinit["status"] == "not-made"


def test_a_current_cached_guest_is_said_so(
    tmp_path: Path,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = linux_recipe(tmp_path, mirror)
    monkeypatch.chdir(recipe.parent.parent)
    mirror.binaries["trixie"] = TRIXIE_NOW | GUEST_NOW
    mirror.publish("trixie", "trixie")
    cached_guest(tmp_path, "sysvinit", "c" * 64, GUEST_NOW | {"sysvinit-core": "3.14-4"})
    (tmp_path / "cache" / "vm" / "guests" / f"systemd-{'d' * 24}").mkdir()  # incomplete
    assert bump_cli(mirror) == 0
    out = capsys.readouterr().out
    assert (
        f"vm-test sysvinit guest (sysvinit-{'c' * 24}): trixie's current versions "
        "(linux-image-amd64 6.12.117-1, sysvinit-core 3.14-4, udev" in out
    )
    assert "vm-test systemd guest: none made yet here" in out


def test_naming_only_a_dockerfile_checks_no_guest(
    tmp_path: Path,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dockerfile = mingw_project(tmp_path, mirror)
    mirror.binaries["trixie"] = dict(GUEST_NOW)
    mirror.publish("trixie", "trixie")
    cached_guest(tmp_path, "systemd", "e" * 64, GUEST_NOW | {"linux-image-amd64": "1-1"})
    monkeypatch.chdir(dockerfile.parent)
    assert bump_cli(mirror, "Dockerfile.mingw") == 0
    assert "vm-test" not in capsys.readouterr().out
    assert bump_cli(mirror) == 14  # the whole project: the guest too
    assert "vm-test systemd guest" in capsys.readouterr().out


class FakeEngine:
    """Stands in for the engine (control flow only: the lock's image is made by the
    integration test, tests/integration/test_bump_lock.py)."""

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def image_with(packages: dict[str, str], calls: list[bool]):  # type: ignore[no-untyped-def]
    def toolchain_packages(plan: object, engine: object, cache: object, *, fresh: bool) -> dict:
        calls.append(fresh)
        return {name: f"{version} amd64" for name, version in packages.items()}

    return toolchain_packages


def test_write_remakes_a_stale_lock_from_an_image_made_anew(
    tmp_path: Path,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = linux_recipe(tmp_path, mirror)
    lock = write_lock(recipe, TRIXIE_NOW | {"libglib2.0-dev": "2.84.4-3~deb13u5"})
    calls: list[bool] = []
    monkeypatch.setattr(bump_locks, "Engine", FakeEngine)
    monkeypatch.setattr(bump_locks, "toolchain_packages", image_with(TRIXIE_NOW, calls))
    assert bump_cli(mirror, str(recipe), "--write") == 0
    assert calls == [True]  # made anew: no cached layer
    assert f"{lock.name} written from its build image made anew (libglib2.0-dev " in (
        capsys.readouterr().out
    )
    assert "libglib2.0-dev 2.84.4-3~deb13u6 amd64" in lock.read_text()
    assert lock.read_text().startswith(toolchain.HEADER)
    assert bump_cli(mirror, str(recipe)) == 0  # current now


def test_an_image_made_anew_with_the_old_library_leaves_the_lock(
    tmp_path: Path,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = linux_recipe(tmp_path, mirror)
    old = TRIXIE_NOW | {"libglib2.0-dev": "2.84.4-3~deb13u5"}
    lock = write_lock(recipe, old)
    before = lock.read_bytes()
    monkeypatch.setattr(bump_locks, "Engine", FakeEngine)
    monkeypatch.setattr(bump_locks, "toolchain_packages", image_with(old, []))
    assert bump_cli(mirror, str(recipe), "--write") == 6
    captured = capsys.readouterr()
    assert "the build image made anew has libglib2.0-dev 2.84.4-3~deb13u5, not trixie's" in (
        captured.out
    )
    assert "bump refused 1 of 1 lock check(s)" in captured.err
    assert lock.read_bytes() == before


def test_write_without_an_engine_leaves_the_lock(
    tmp_path: Path,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = linux_recipe(tmp_path, mirror)
    lock = write_lock(recipe, TRIXIE_NOW | {"libglib2.0-dev": "2.84.4-3~deb13u5"})
    before = lock.read_bytes()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    assert bump_cli(mirror, str(recipe), "--write") == 5
    assert "remaking it failed:" in capsys.readouterr().out
    assert lock.read_bytes() == before
