"""verify's comparisons: every kind of difference is named (pure logic on real files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.commands.verify import (
    check_directory,
    compare,
    conclude,
    read_sums,
    summarize,
    variations,
)
from builder.errors import InputError, VerifyError
from builder.formats.checksums import digest_tree, format_sha256sums


def _release(tmp_path: Path) -> Path:
    out = tmp_path / "release"
    out.mkdir()
    (out / "qemu-ga").write_bytes(b"\x7fELF binary")
    (out / "unit.service").write_text("[Unit]\n")
    (out / "SHA256SUMS").write_text(
        format_sha256sums(digest_tree(out, ["qemu-ga", "unit.service"]))
    )
    return out


def test_untouched_directory_passes(tmp_path: Path) -> None:
    out = _release(tmp_path)
    result = check_directory(out, out / "SHA256SUMS")
    assert result.ok and result.same == ["qemu-ga", "unit.service"]


def test_modified_artifact_is_named(tmp_path: Path) -> None:
    out = _release(tmp_path)
    (out / "qemu-ga").write_bytes(b"\x7fELF tampered")
    result = check_directory(out, out / "SHA256SUMS")
    assert result.different == ["qemu-ga"] and not result.ok
    with pytest.raises(VerifyError, match="differ: qemu-ga") as caught:
        conclude(result, "release", None, None, summarize(result, {}, None))
    assert caught.value.exit_code == 10


def test_missing_and_extra(tmp_path: Path) -> None:
    out = _release(tmp_path)
    (out / "unit.service").unlink()
    assert check_directory(out, out / "SHA256SUMS").missing == ["unit.service"]
    assert compare({"a": "1" * 64}, {"a": "1" * 64, "b": "2" * 64}).extra == ["b"]


def test_bad_sums_file(tmp_path: Path) -> None:
    (tmp_path / "S").write_text("garbage\n")
    with pytest.raises(InputError, match="not a SHA256SUMS file"):
        read_sums(tmp_path / "S")
    with pytest.raises(InputError, match="no such checksum file"):
        read_sums(tmp_path / "absent")


def test_variations_differ_in_root_hostname_and_umask() -> None:
    first, second = variations("abc123")
    assert first.root != second.root and first.hostname != second.hostname
    assert first.umask != second.umask


def test_verify_directory_is_claimed_only_when_new_empty_or_its_own(tmp_path: Path) -> None:
    from builder.commands.verify import claim_directory
    from builder.errors import OutputError

    new = tmp_path / "new" / "linux-static.verify"
    claim_directory(new)
    (new / "verify.json").write_text("{}")
    (new / ".a.lock").write_text("")
    (new / "a").mkdir()
    claim_directory(new)  # its own: accepted again
    (new / "thesis.odt").write_text("mine")
    with pytest.raises(OutputError, match=r"thesis\.odt"):
        claim_directory(new)
    users = tmp_path / "users"
    users.mkdir()
    (users / "verify.json").write_text("a user's file of that name")
    with pytest.raises(OutputError, match="no verify marker"):
        claim_directory(users)
    assert (users / "verify.json").read_text() == "a user's file of that name"


def test_reports_replace_a_planted_link_instead_of_following_it(tmp_path: Path) -> None:
    from builder.commands.verify import Comparison, conclude

    precious = tmp_path / "precious"
    precious.write_text("keep")
    report = tmp_path / "verify.json"
    report.symlink_to(precious)
    conclude(Comparison(same=["x"]), "what", None, report, {"identical": ["x"]})
    assert precious.read_text() == "keep"
    assert not report.is_symlink() and "identical" in report.read_text()


def test_a_file_added_beside_the_artifacts_is_reported(tmp_path: Path) -> None:
    out = _release(tmp_path)
    (out / "libevil.so").write_bytes(b"\x7fELF evil")
    (out / "manifest.json").write_text("{}")  # the tool's own records are not artifacts
    result = check_directory(out, out / "SHA256SUMS")
    assert result.extra == ["libevil.so"] and not result.ok
    with pytest.raises(VerifyError, match=r"not in the reference: libevil\.so"):
        conclude(result, "release", None, None, {})
