"""Which QEMU series a source is, which patch set serves it, and whether each patch applies."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from builder.cli import main
from builder.errors import InputError, PatchError
from builder.stages import series


@pytest.mark.parametrize(
    "version,name",
    [
        ("5.2.0", "5.2"),
        ("7.2.0\n", "7.2"),
        ("10.0.13", "10.0"),
        ("10.2.2", "10.2"),
        ("11.0.0-rc1", "11.0"),
    ],
)
def test_series_of(version: str, name: str) -> None:
    assert series.series_of(version) == name


def test_a_version_that_is_not_one() -> None:
    with pytest.raises(InputError, match="not a QEMU version"):
        series.series_of("v7.2; rm -rf /")


def test_every_series_we_carry_has_its_patches() -> None:
    assert {"5.2", "7.2", "10.0", "10.2", "11.0", "11.1"} <= set(series.supported_series())
    for name in series.supported_series():
        assert series.patch_set(name)


def test_a_series_without_a_patch_set_names_the_ones_there_are() -> None:
    with pytest.raises(
        PatchError, match=r"QEMU 4\.2 has no patch set.*5\.2, 7\.2, 10\.0"
    ) as raised:
        series.patch_set("4.2")
    assert raised.value.exit_code == 4 and "patches/qemu-4.2" in raised.value.hint


def fake_source(root: Path, version: str, commands: str) -> Path:
    (root / "qga").mkdir(parents=True)
    (root / "VERSION").write_text(version + "\n")
    (root / "qga" / "commands.c").write_text(commands)
    return root


PATCH = """--- a/qga/commands.c
+++ b/qga/commands.c
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
"""


def test_a_patch_is_tried_on_a_scratch_copy(tmp_path: Path) -> None:
    tree = fake_source(tmp_path / "qemu-7.2.0", "7.2.0", "one\ntwo\nthree\n")
    patch = tmp_path / "0001.patch"
    patch.write_text(PATCH)
    tarball = tmp_path / "qemu.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(tree, arcname="qemu-7.2.0")
    for source in (tree, tarball):
        assert series.read_version(source) == "7.2.0"
        (trial,) = series.try_patches(source, [patch])
        assert trial.applies and trial.detail == "applies"
    assert (tree / "qga" / "commands.c").read_text() == "one\ntwo\nthree\n"  # untouched


def test_a_patch_that_does_not_apply_names_file_and_hunk(tmp_path: Path) -> None:
    tree = fake_source(tmp_path / "qemu", "7.2.0", "one\nzwei\nthree\n")
    patch = tmp_path / "0001.patch"
    patch.write_text(PATCH)
    (trial,) = series.try_patches(tree, [patch])
    assert not trial.applies
    assert trial.detail == "qga/commands.c: hunk #1 (at line 1) failed"


def test_a_source_without_version(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    with pytest.raises(InputError, match="has no VERSION"):
        series.read_version(tmp_path / "tree")


def test_patches_check_on_an_unsupported_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = fake_source(tmp_path / "qemu", "4.2.1", "x\n")
    assert main(["patches", "check", str(tree)]) == 4
    err = capsys.readouterr().err
    assert "QEMU 4.2 has no patch set" in err and "Traceback" not in err


def test_patches_named_by_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = fake_source(tmp_path / "qemu", "7.2.0", "one\ntwo\nthree\n")
    (tmp_path / "0001.patch").write_text(PATCH)
    monkeypatch.chdir(tmp_path)
    (trial,) = series.try_patches(tree, [Path("0001.patch")])
    assert trial.applies, trial.detail
