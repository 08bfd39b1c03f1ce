"""`bump`: a Debian pin moved along its QEMU series, each link of the chain checked (InRelease
signed by a throwaway key, Sources, .dsc, orig tarball), against a file:// mirror laid out here.
No network: the mirror, the keyring and the cache are all under tmp_path."""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from builder.cli import main
from builder.commands import bump
from builder.config import recipe_pins
from builder.config.recipe import load_recipe
from builder.config.settings import CACHE_ENV, MIRROR_ENV
from builder.errors import InputError
from builder.host import debian
from builder.host.debian_index import compare_versions, dsc_fields, parse_deb822
from builder.stages.series import PatchTrial
from tests.helpers import ROOT

ARCHIVE = "archive@example.invalid"
OTHER = "other@example.invalid"
MAIN_C = "int main(void)\n{\n    return 0;\n}\n"

# --- Debian version order --------------------------------------------------------------------

ORDERED = [
    ("1.0~rc1", "1.0"),
    ("1.0", "1.0+ds"),
    ("1.0-1", "1.0-2"),
    ("10.0.9", "10.0.13"),
    ("1:10.0.13+ds-0+deb13u1", "1:10.0.13+ds-0+deb13u2"),
    ("1:10.0.13+ds-0+deb13u2", "1:10.0.14+ds-0+deb13u1"),
    ("9:1.0", "10:0.1"),
    ("2.0", "1:1.0"),
    ("1:11.0.0~rc2+ds-1", "1:11.0.0+ds-1"),
    ("1.0a", "1.0b"),
    ("1.0", "1.0a"),
    ("1.0a", "1.0+"),
    ("1.0~~", "1.0~"),
    ("1.001", "1.2"),
]


@pytest.mark.parametrize("older,newer", ORDERED)
def test_debian_versions_sort_as_dpkg_sorts_them(older: str, newer: str) -> None:
    assert compare_versions(older, newer) == -1
    assert compare_versions(newer, older) == 1
    assert compare_versions(newer, newer) == 0
    if shutil.which("dpkg"):
        lt = subprocess.run(["dpkg", "--compare-versions", older, "lt", newer], check=False)
        assert lt.returncode == 0, (older, newer)


@pytest.mark.parametrize("a,b", [("1.0", "1.0-0"), ("0:1.0", "1.0"), ("1.01", "1.1")])
def test_equal_debian_versions(a: str, b: str) -> None:
    assert compare_versions(a, b) == 0


def test_deb822_keeps_multi_line_fields_and_cuts_a_dsc_signature() -> None:
    text = "A: 1\nB:\n x y\n z w\n\nC: 2\n"
    assert parse_deb822(text) == [{"A": "1", "B": "\nx y\nz w"}, {"C": "2"}]
    signed = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nSource: qemu\nVersion: 1\n"
        "\n-----BEGIN PGP SIGNATURE-----\nxx\n-----END PGP SIGNATURE-----\n"
    )
    assert dsc_fields(signed) == {"Source": "qemu", "Version": "1"}


# --- a signing key and a mirror ----------------------------------------------------------------


@pytest.fixture(scope="module")
def gnupg() -> Iterator[Path]:
    """A throwaway GNUPGHOME with two keys: the archive's, whose public key is the keyring, and
    another one. Short path under /tmp: gpg-agent's socket path has a length limit."""
    home = Path(tempfile.mkdtemp(prefix="qga-gpg-"))
    try:
        for uid in (ARCHIVE, OTHER):
            _gpg(home, "--passphrase", "", "--quick-gen-key", f"T <{uid}>", "ed25519", "sign")
        export = subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--export", ARCHIVE],
            capture_output=True,
            check=True,
        )
        (home / "archive.gpg").write_bytes(export.stdout)
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
        shutil.rmtree(home, ignore_errors=True)


def _gpg(home: Path, *args: str) -> None:
    subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--quiet", "--pinentry-mode", "loopback", *args],
        check=True,
        capture_output=True,
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Listed:
    version: str
    suite: str
    dsc: str
    orig: str
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256
    package: str = "qemu"
    directory: str = "pool/main/q/qemu"


@dataclass
class Mirror:
    root: Path
    gnupg: Path
    listed: list[Listed] = field(default_factory=list)
    binaries: dict[str, dict[str, str]] = field(default_factory=dict)  # suite -> Packages

    @property
    def pool(self) -> Path:
        return self.root / "pool" / "main" / "q" / "qemu"

    def add(self, version: str, suite: str, main_c: str = MAIN_C) -> Listed:
        """The version's orig tarball (VERSION: its QEMU release) and .dsc in the pool, and
        its paragraph for the suite's Sources."""
        release = debian.qemu_release(version)
        assert release is not None
        upstream = debian.upstream_version(version)
        self.pool.mkdir(parents=True, exist_ok=True)
        orig = self.pool / f"qemu_{upstream}.orig.tar.xz"
        if not orig.exists():
            with tarfile.open(orig, "w:xz") as tar:
                for name, text in (("VERSION", f"{release}\n"), ("qga/main.c", main_c)):
                    data = text.encode()
                    member = tarfile.TarInfo(f"qemu-{release}/{name}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
        return self._list("qemu", version, suite, orig)

    def add_source(
        self, package: str, version: str, suite: str, suffix: str = ".orig.tar.xz", body: str = ""
    ) -> Listed:
        """Another source package (one Dockerfile.mingw pins): an orig tarball of one file
        (`body`, default its upstream version: a new upstream, a new tarball) and a .dsc."""
        upstream = debian.upstream_version(version)
        pool = self.root / "pool" / "main" / package[0] / package
        pool.mkdir(parents=True, exist_ok=True)
        orig = pool / f"{package}_{upstream}{suffix}"
        if not orig.exists():
            mode = {".orig.tar.xz": "w:xz", ".orig.tar.gz": "w:gz", ".orig.tar.bz2": "w:bz2"}
            with tarfile.open(orig, mode[suffix]) as tar:  # type: ignore[call-overload]
                data = (body or upstream).encode()
                member = tarfile.TarInfo(f"{package}-{upstream}/README")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        return self._list(package, version, suite, orig)

    def _list(self, package: str, version: str, suite: str, orig: Path) -> Listed:
        orig_sha = _sha256(orig.read_bytes())
        dsc = orig.parent / f"{package}_{version.split(':', 1)[-1]}.dsc"
        dsc.write_text(
            f"Format: 3.0 (quilt)\nSource: {package}\nVersion: {version}\nChecksums-Sha256:\n"
            f" {orig_sha} {orig.stat().st_size} {orig.name}\n"
        )
        directory = orig.parent.relative_to(self.root).as_posix()
        entry = Listed(version, suite, dsc.name, orig.name, package=package, directory=directory)
        entry.files = {dsc.name: _sha256(dsc.read_bytes()), orig.name: orig_sha}
        self.listed.append(entry)
        return entry

    def publish(self, suite: str, codename: str, signer: str = ARCHIVE, extra: str = "") -> None:
        """dists/SUITE: Sources.xz of what `add` listed there, Packages.xz of what `binaries`
        gives for it, and InRelease signed by signer."""
        paragraphs = ["Package: qemu-web\nVersion: 1.0-1\nDirectory: pool/main/q/qemu-web\n"]
        for entry in (e for e in self.listed if e.suite == suite):
            sums = "".join(f" {sha} 1 {name}\n" for name, sha in entry.files.items())
            paragraphs.append(
                f"Package: {entry.package}\nBinary: {entry.package}-bin\n"
                f"Version: {entry.version}\nDirectory: {entry.directory}\n"
                f"Checksums-Sha256:\n{sums}"
            )
        dists = self.root / "dists" / suite
        indexes = {
            "main/source/Sources.xz": lzma.compress("\n".join(paragraphs).encode()),
            "main/binary-amd64/Packages.xz": lzma.compress(self._packages(suite).encode()),
        }
        for name, data in indexes.items():
            (dists / name).parent.mkdir(parents=True, exist_ok=True)
            (dists / name).write_bytes(data)
        sums = "".join(f" {_sha256(data)} {len(data)} {name}\n" for name, data in indexes.items())
        release = dists / "Release"
        release.write_text(
            f"Origin: Debian\nSuite: {suite}\nCodename: {codename}\n{extra}SHA256:\n{sums}"
        )
        (dists / "InRelease").unlink(missing_ok=True)
        _gpg(self.gnupg, "--local-user", signer, "--clearsign", "-o", str(dists / "InRelease"),
             str(release))  # fmt: skip

    def _packages(self, suite: str) -> str:
        paragraphs = ["Package: bash\nVersion: 5.2-1\nArchitecture: amd64\n"]
        for name, version in self.binaries.get(suite, {}).items():
            paragraphs.append(
                f"Package: {name}\nSource: x\nVersion: {version}\nArchitecture: amd64\n"
            )
        return "\n".join(paragraphs)


@pytest.fixture
def mirror(tmp_path: Path, gnupg: Path, monkeypatch: pytest.MonkeyPatch) -> Mirror:
    monkeypatch.setenv(MIRROR_ENV, f"file://{tmp_path / 'mirror'}")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return Mirror(tmp_path / "mirror", gnupg)


def bump_cli(mirror: Mirror, *args: str) -> int:
    """`bump ARGS`, trusting the test's archive key instead of Debian's."""
    return main(["bump", *args, "--keyring", str(mirror.gnupg / "archive.gpg")])


def fake_patches_apply(plan: object, release: str, tarball: Path) -> list[PatchTrial]:
    """Stands in for the patch check (control flow only): every patch applies."""
    return [PatchTrial(Path("0001-fake.patch"), "0" * 64, True, "applies")]


@pytest.fixture
def patches_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bump, "patch_trials", fake_patches_apply)


# --- recipes -------------------------------------------------------------------------------------

DEBIAN_PIN = """\
  # Debian's orig tarball (this comment stays).
  debian:
    package: qemu
    version: "{version}"   # the Debian version
    suite: trixie
    sha256: {sha256}
"""
MIRROR_PIN = """\
  mirror:
    # a pool file, by path
    path: {path}
    sha256: {sha256}  # of the orig tarball
"""
RECIPE = """\
# A test recipe: its comments and layout must survive a bump.
name: {name}
description: a pin from Debian's archive

environment:
  dockerfile: ../Dockerfile.linux   # beside the project
{base}
source:
{pin}
{patches}build:
  targets: [qemu-ga]

artifacts:
  - path: qga/qemu-ga
    name: qemu-ga-patched-static
    kind: static-elf
"""
OWN_BASE = "  base:\n    debootstrap: {suite: trixie, variant: minbase}\n"
OWN_PATCH = """\
--- a/qga/main.c
+++ b/qga/main.c
@@ -1,4 +1,5 @@
 int main(void)
 {
+    /* ours */
     return 0;
 }
"""


def write_recipe(tmp_path: Path, name: str, pin: str, own_patch: bool = False) -> Path:
    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text("")
    shutil.copy(ROOT / "Dockerfile.linux", project)
    base = patches = ""
    if own_patch:
        patch = project / "patches" / "0001-ours.patch"
        patch.parent.mkdir(exist_ok=True)
        patch.write_text(OWN_PATCH)
        digest = _sha256(patch.read_bytes())
        base = OWN_BASE
        patches = f"patches:\n  - path: ../patches/0001-ours.patch\n    sha256: {digest}\n\n"
    text = RECIPE.format(name=name, base=base, pin=pin, patches=patches)
    path = project / "recipes" / f"{name}.yaml"
    path.write_text(text)
    return path


def debian_recipe(tmp_path: Path, current: Listed, own_patch: bool = False) -> Path:
    pin = DEBIAN_PIN.format(version=current.version, sha256=current.files[current.orig])
    return write_recipe(tmp_path, "bump-debian", pin, own_patch)


def mirror_recipe(tmp_path: Path, current: Listed) -> Path:
    path = f"pool/main/q/qemu/{current.orig}"
    pin = MIRROR_PIN.format(path=path, sha256=current.files[current.orig])
    return write_recipe(tmp_path, "bump-mirror", pin)


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(old) == len(new)
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


# --- bumps ---------------------------------------------------------------------------------------


def test_a_debian_pin_moves_to_the_next_point_release(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-0+deb13u1", "trixie")
    newer = mirror.add("1:10.0.14+ds-0+deb13u1", "trixie")
    mirror.add("1:10.2.2+ds-1", "trixie")  # another series: never a candidate
    mirror.publish("trixie", "trixie")
    recipe = debian_recipe(tmp_path, current)
    before = recipe.read_text()

    assert bump_cli(mirror, str(recipe), "--write") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    sha = newer.files[newer.orig]
    assert (
        f"{recipe}: QEMU 10.0.13 -> 10.0.14 (Debian version 1:10.0.14+ds-0+deb13u1, "
        f"file qemu_10.0.14+ds.orig.tar.xz, sha256 {sha}); written" in out
    )
    after = recipe.read_text()
    assert changed_lines(before, after) == [
        (
            '    version: "1:10.0.13+ds-0+deb13u1"   # the Debian version\n',
            '    version: "1:10.0.14+ds-0+deb13u1"   # the Debian version\n',
        ),
        (f"    sha256: {current.files[current.orig]}\n", f"    sha256: {sha}\n"),
    ]
    pinned = load_recipe(recipe).source.debian
    assert pinned is not None and (pinned.version, pinned.sha256, pinned.suite) == (
        "1:10.0.14+ds-0+deb13u1",
        sha,
        "trixie",
    )
    # kept where a run of the bumped recipe would look for it
    assert (tmp_path / "cache" / "sources" / "mirror" / f"{sha[:16]}-{newer.orig}").is_file()
    # and a second bump finds it current
    assert bump_cli(mirror, str(recipe)) == 0
    assert f"{recipe}: up to date (10.0.14)" in capsys.readouterr().out


def test_a_mirror_pin_moves_to_the_next_point_release(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    newer = mirror.add("1:10.0.14+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    recipe = mirror_recipe(tmp_path, current)
    before = recipe.read_text()

    assert bump_cli(mirror, str(recipe), "--write") == 0, capsys.readouterr().err
    assert f"{recipe}: QEMU 10.0.13 -> 10.0.14 (Debian version 1:10.0.14+ds-1" in (
        capsys.readouterr().out
    )
    sha = newer.files[newer.orig]
    assert changed_lines(before, recipe.read_text()) == [
        (
            "    path: pool/main/q/qemu/qemu_10.0.13+ds.orig.tar.xz\n",
            "    path: pool/main/q/qemu/qemu_10.0.14+ds.orig.tar.xz\n",
        ),
        (
            f"    sha256: {current.files[current.orig]}  # of the orig tarball\n",
            f"    sha256: {sha}  # of the orig tarball\n",
        ),
    ]
    pinned = load_recipe(recipe).source.mirror
    assert pinned is not None and pinned.path.endswith(newer.orig) and pinned.sha256 == sha


def test_a_debian_pin_its_suite_no_longer_lists_is_warned_about(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pool still holds it, the index moved on (to another series): up to date, but apt
    cannot fetch the pin from that suite any more, and bump says so."""
    current = mirror.add("1:10.2.2+ds-1", "elsewhere")  # in the pool, not in unstable's index
    mirror.add("1:11.1.3+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    recipe = DEBIAN_PIN.format(version=current.version, sha256=current.files[current.orig])
    path = write_recipe(tmp_path, "bump-unlisted", recipe.replace("trixie", "unstable"))
    assert bump_cli(mirror, str(path)) == 0
    out = capsys.readouterr().out
    assert "1:10.2.2+ds-1 is no longer listed in unstable's Sources" in out
    assert "`source.mirror`" in out and f"{path}: up to date (10.2.2)" in out


def test_a_bump_follows_in_the_recipes_comments_and_the_readmes_series_row(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-0+deb13u1", "trixie")
    mirror.add("1:10.0.14+ds-0+deb13u1", "trixie")
    mirror.publish("trixie", "trixie")
    recipe = debian_recipe(tmp_path, current)
    header = "# QEMU 10.0.13 (Debian's 1:10.0.13+ds-0+deb13u1), not 10.0.130\n"
    recipe.write_text(header + recipe.read_text())
    readme = recipe.parent.parent / "README.md"
    rows = (
        "| series | tested with |\n|---|---|\n"
        "| 10.0 | 10.0.13 (Debian trixie's) |\n| 10.2 | 10.0.13 is not this row's |\n"
    )
    readme.write_text("# A project\n\nIt tests 10.0.13 here.\n\n" + rows)

    assert bump_cli(mirror, str(recipe), "--write") == 0, capsys.readouterr().err
    assert "README.md's series table says 10.0.14 now" in capsys.readouterr().out
    assert recipe.read_text().startswith(
        "# QEMU 10.0.14 (Debian's 1:10.0.14+ds-0+deb13u1), not 10.0.130\n"
    )
    assert readme.read_text() == readme_after(rows)


def readme_after(rows: str) -> str:
    return "# A project\n\nIt tests 10.0.13 here.\n\n" + rows.replace(
        "| 10.0 | 10.0.13", "| 10.0 | 10.0.14"
    )


def test_a_dry_run_reports_and_changes_nothing(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.add("1:10.0.14+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    recipe = mirror_recipe(tmp_path, current)
    before = recipe.read_bytes()
    assert bump_cli(mirror, str(recipe)) == 0
    assert "QEMU 10.0.13 -> 10.0.14" in capsys.readouterr().out
    assert recipe.read_bytes() == before
    assert sorted(p.name for p in recipe.parent.iterdir()) == [recipe.name]  # no temporary left


def test_a_listed_version_whose_files_are_missing_is_skipped(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.add("1:10.0.14+ds-1", "unstable")
    gone = mirror.add("1:10.0.15+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    (mirror.pool / gone.dsc).unlink()
    recipe = mirror_recipe(tmp_path, current)

    assert bump_cli(mirror, str(recipe), "--write") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert (
        f"{recipe}: skipped 1:10.0.15+ds-1: listed in unstable's Sources but its files are "
        "missing" in out
    )
    assert "QEMU 10.0.13 -> 10.0.14" in out
    assert "qemu_10.0.14+ds.orig.tar.xz" in recipe.read_text()


def test_an_up_to_date_pin_and_a_newer_series_without_patches(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.add("1:10.0.12+ds-1", "unstable")  # older: not a candidate
    mirror.add("1:99.0.0+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    recipe = mirror_recipe(tmp_path, current)
    assert bump_cli(mirror, str(recipe)) == 0
    out = capsys.readouterr().out
    assert f"{recipe}: up to date (10.0.13)" in out
    assert "QEMU 99.0.0 is out (Debian 1:99.0.0+ds-1 in unstable): no patch set of ours" in out


def test_json_output(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    current = mirror.add("1:10.0.13+ds-1", "unstable")
    newer = mirror.add("1:10.0.14+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    recipe = mirror_recipe(tmp_path, current)
    assert bump_cli(mirror, str(recipe), "--json") == 0
    (document,) = json.loads(capsys.readouterr().out)["recipes"]
    assert document["status"] == "bumped" and not document["written"]
    assert document["path"] == f"pool/main/q/qemu/{newer.orig}"
    assert document["sha256"] == newer.files[newer.orig]


def test_a_recipe_not_pinned_from_debian_is_left_alone(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    pin = "  local:\n    path: /nonexistent/qemu\n"
    recipe = write_recipe(tmp_path, "bump-local", pin)
    assert bump_cli(mirror, str(recipe)) == 0
    assert "source.local is not pinned from Debian: nothing to bump" in capsys.readouterr().out


# --- refusals: nothing written -------------------------------------------------------------------


def test_an_inrelease_signed_by_another_key_is_refused(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.add("1:10.0.14+ds-1", "unstable")
    mirror.publish("unstable", "sid", signer=OTHER)
    recipe = mirror_recipe(tmp_path, current)
    before = recipe.read_bytes()
    assert bump_cli(mirror, str(recipe), "--write") == 3
    captured = capsys.readouterr()
    assert f"{recipe}: refused: InRelease of unstable: its signature does not verify" in (
        captured.out
    )
    assert "bump refused 1 of 1 recipe(s)" in captured.err and "Traceback" not in captured.err
    assert recipe.read_bytes() == before


def test_an_inrelease_of_another_suite_is_refused(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    shutil.copytree(mirror.root / "dists" / "unstable", mirror.root / "dists" / "experimental")
    recipe = mirror_recipe(tmp_path, current)
    assert bump_cli(mirror, str(recipe), "--suite", "experimental") == 3
    assert "signed for suite 'unstable'" in capsys.readouterr().out


def test_an_index_signed_by_an_expired_key_is_refused(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    """gpgv exits 0 and says VALIDSIG for a signature by a key that has since expired; apt
    refuses it, and so does bump (GOODSIG, no EXPKEYSIG)."""
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    home = Path(tempfile.mkdtemp(prefix="qga-gpgx-"))  # short: gpg-agent's socket path
    then = ("--faked-system-time", "20200101T000000!")  # a key valid for one day in 2020
    try:
        _gpg(home, *then, "--passphrase", "", "--quick-gen-key", "X <x@example.invalid>",
             "ed25519", "sign", "1d")  # fmt: skip
        dists = mirror.root / "dists" / "unstable"
        (dists / "InRelease").unlink()
        _gpg(home, *then, "--clearsign", "-o", str(dists / "InRelease"), str(dists / "Release"))
        keyring = tmp_path / "expired.gpg"
        keyring.write_bytes(
            subprocess.run(
                ["gpg", "--homedir", str(home), "--batch", "--export"],
                capture_output=True,
                check=True,
            ).stdout
        )
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
        shutil.rmtree(home, ignore_errors=True)
    recipe = mirror_recipe(tmp_path, current)
    assert main(["bump", str(recipe), "--keyring", str(keyring)]) == 3
    assert "its signature does not verify" in capsys.readouterr().out


def test_an_expired_inrelease_is_refused(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.publish("unstable", "sid", extra="Valid-Until: Sat, 01 Jan 2000 00:00:00 UTC\n")
    recipe = mirror_recipe(tmp_path, current)
    assert bump_cli(mirror, str(recipe)) == 3
    assert "InRelease of unstable: expired" in capsys.readouterr().out


def test_an_expired_inrelease_is_taken_when_asked_and_still_verified(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A snapshot mirror's index is past its date by design: --allow-expired-index takes it
    (with a warning), but its signature still has to verify."""
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.add("1:10.0.14+ds-1", "unstable")
    mirror.publish("unstable", "sid", extra="Valid-Until: Sat, 01 Jan 2000 00:00:00 UTC\n")
    recipe = mirror_recipe(tmp_path, current)
    assert bump_cli(mirror, "--allow-expired-index", str(recipe)) == 0
    out = capsys.readouterr().out
    assert "10.0.13 -> 10.0.14" in out
    signed = mirror.root / "dists" / "unstable" / "InRelease"
    signed.write_text(signed.read_text().replace("sid", "sid2", 1))  # no longer what was signed
    assert bump_cli(mirror, "--allow-expired-index", str(recipe)) == 3
    assert "does not verify" in capsys.readouterr().out


def test_a_sources_index_whose_sha256_is_not_the_inreleases_is_refused(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    sources = mirror.root / "dists" / "unstable" / "main" / "source" / "Sources.xz"
    sources.write_bytes(lzma.compress(b"Package: qemu\nVersion: 1:10.0.99+ds-1\n"))
    recipe = mirror_recipe(tmp_path, current)
    assert bump_cli(mirror, str(recipe)) == 3
    assert "main/source/Sources.xz: sha256" in capsys.readouterr().out


def test_a_dsc_whose_sha256_is_not_the_sources_is_refused(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    newer = mirror.add("1:10.0.14+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    with (mirror.pool / newer.dsc).open("a") as dsc:
        dsc.write("Comment: changed after the index was signed\n")
    recipe = mirror_recipe(tmp_path, current)
    before = recipe.read_bytes()
    assert bump_cli(mirror, str(recipe), "--write") == 3
    out = capsys.readouterr().out
    assert f"{recipe}: refused: {newer.dsc}: sha256" in out and "verified Sources" in out
    assert recipe.read_bytes() == before


def test_an_orig_tarball_whose_sha256_is_not_the_dscs_is_refused(
    tmp_path: Path, mirror: Mirror, patches_apply: None, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    newer = mirror.add("1:10.0.14+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    (mirror.pool / newer.orig).write_bytes(b"not the tarball the .dsc names")
    recipe = mirror_recipe(tmp_path, current)
    assert bump_cli(mirror, str(recipe), "--write") == 3
    assert "which its verified .dsc gives" in capsys.readouterr().out
    assert "10.0.13" in recipe.read_text()
    assert not list((tmp_path / "cache" / "sources" / "mirror").iterdir())


def test_patches_that_fail_leave_the_recipe_as_it_was(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real check: the recipe's own patch, whose hunk the newer release's main.c lacks."""
    current = mirror.add("1:10.0.13+ds-0+deb13u1", "trixie")
    mirror.add("1:10.0.14+ds-0+deb13u1", "trixie", main_c="/* rewritten upstream */\n")
    mirror.publish("trixie", "trixie")
    recipe = debian_recipe(tmp_path, current, own_patch=True)
    before = recipe.read_bytes()
    assert bump_cli(mirror, str(recipe), "--write") == 4
    out = capsys.readouterr().out
    assert f"{recipe}: refused: patches on QEMU 10.0.14" in out
    assert "0001-ours.patch does not apply: qga/main.c: hunk #1" in out
    assert recipe.read_bytes() == before


def test_patches_that_apply_are_checked_for_real(
    tmp_path: Path, mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    current = mirror.add("1:10.0.13+ds-0+deb13u1", "trixie")
    mirror.add("1:10.0.14+ds-0+deb13u1", "trixie")
    mirror.publish("trixie", "trixie")
    recipe = debian_recipe(tmp_path, current, own_patch=True)
    assert bump_cli(mirror, str(recipe), "--write") == 0, capsys.readouterr().out
    assert "1:10.0.14+ds-0+deb13u1" in recipe.read_text()


# --- the rewrite itself --------------------------------------------------------------------------


def test_the_rewrite_keeps_every_other_byte() -> None:
    text = (
        "name: x  # one\r\nsource:\r\n  # about the pin\r\n  mirror:\r\n"
        "    sha256: 'aa'   # trailing\r\n    path: pool/a\r\n"
        "patches: []\r\n  # stray comment\r\n"
    )
    new = recipe_pins.rewritten(text, "mirror", {"path": "pool/b", "sha256": "bb"})
    assert new == text.replace("'aa'", "'bb'").replace("pool/a", "pool/b")
    # a plain value that YAML would read as something else is quoted
    plain = "source:\n  debian:\n    version: 1.0-1\n"
    assert recipe_pins.rewritten(plain, "debian", {"version": "1:10"}) == (
        'source:\n  debian:\n    version: "1:10"\n'
    )


@pytest.mark.parametrize(
    "text",
    [
        "source: {mirror: {path: pool/a, sha256: aa}}\n",
        "source:\n  mirror: {path: pool/a, sha256: aa}\n",
        "source:\n  debian:\n    version: >-\n      1.0\n",
        "source:\n  debian:\n    version: 1.0\n      -1\n",
        "source:\n  debian:\n    version: 1.0#1\n",
        "name: x\n",
    ],
)
def test_a_layout_the_rewrite_cannot_keep_is_refused(text: str) -> None:
    kind = "debian" if "debian" in text else "mirror"
    key = "version" if kind == "debian" else "path"
    with pytest.raises(InputError, match="rewrite"):
        recipe_pins.rewritten(text, kind, {key: "x"})


def test_the_rewrite_is_atomic_and_keeps_the_mode(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    shutil.copy(ROOT / "recipes" / "linux-static-qemu-10.0.yaml", recipe)
    os.chmod(recipe, 0o640)
    before = recipe.read_text()
    recipe_pins.rewrite_recipe(recipe, "debian", {"version": "1:10.0.99+ds-1", "sha256": "c" * 64})
    assert len(changed_lines(before, recipe.read_text())) == 2
    assert (recipe.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["r.yaml"]
    pinned = load_recipe(recipe).source.debian
    assert pinned is not None and pinned.version == "1:10.0.99+ds-1"


# --- the example workflow ------------------------------------------------------------------------

BUMP_WORKFLOW = ROOT / "examples" / "github-actions-bump.yml"


def workflow_bump_arguments() -> list[str]:
    """The arguments of the bump step's command, as the example workflow writes them."""
    job = yaml.safe_load(BUMP_WORKFLOW.read_text())["jobs"]["bump"]
    (step,) = [s for s in job["steps"] if s.get("name") == "bump"]
    (line,) = [line for line in step["run"].splitlines() if "-m builder bump" in line]
    command = shlex.split(line.split(">", 1)[0])
    return command[command.index("builder") + 1 :]


def test_the_example_workflows_bump_step_moves_the_projects_pins(
    tmp_path: Path,
    mirror: Mirror,
    patches_apply: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The workflow's own command, run in a project whose recipes/ holds a pinned recipe, on a
    mirror laid out here with an index signed by the test's key: it rewrites the pin (what the
    pull request carries)."""
    arguments = workflow_bump_arguments()
    assert arguments[:2] == ["bump", "--write"] and "--allow-expired-index" not in arguments
    current = mirror.add("1:10.0.13+ds-1", "unstable")
    newer = mirror.add("1:10.0.14+ds-1", "unstable")
    mirror.publish("unstable", "sid")
    recipe = mirror_recipe(tmp_path, current)
    monkeypatch.chdir(recipe.parent.parent)  # the checkout: bump takes recipes/*.yaml
    assert main([*arguments, "--keyring", str(mirror.gnupg / "archive.gpg")]) == 0
    assert "QEMU 10.0.13 -> 10.0.14" in capsys.readouterr().out
    pinned = load_recipe(recipe).source.mirror
    assert pinned is not None and pinned.sha256 == newer.files[newer.orig]


def test_the_example_workflow_says_why_it_needs_its_own_token() -> None:
    text = BUMP_WORKFLOW.read_text()
    job = yaml.safe_load(text)["jobs"]["bump"]
    (opener,) = [s for s in job["steps"] if "create-pull-request" in s.get("uses", "")]
    assert opener["with"]["token"] == "${{ secrets.BUMP_TOKEN }}"
    assert "GITHUB_TOKEN does not start the pull request's CI" in " ".join(text.split())
