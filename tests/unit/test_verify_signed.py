"""`verify --public-key KEY DIR` (no Docker, no engine) and signed inputs and outputs of
`release`: each way a signed directory can be wrong is one message naming the file, with an
exit code of its own (16 no signature, 17 bad or another key's, 18 a changed file, 19 a missing
one, 20 an extra one); links are never followed out of the directory."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.cli import main
from builder.formats.checksums import format_sha256sums, sha256_file
from builder.host.openpgp import Signer, SigningRequest, open_signer
from builder.outputs.output_dir import why_not_ours
from builder.outputs.release_dir import why_not_release
from tests.openpgp_keys import check_as_a_user
from tests.unit.test_release import SERVICE, make_output, one_error


@pytest.fixture
def plain_signer(openpgp_keys) -> Iterator[Signer]:
    with open_signer(SigningRequest(key_file=openpgp_keys.plain_secret)) as signer:
        yield signer


def sign_output(directory: Path, signer: Signer) -> Path:
    """Sign a run's output as `run --signing-key` does: every file listed, then signed."""
    names = [
        str(path.relative_to(directory))
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != "SHA256SUMS"
    ]
    (directory / "SHA256SUMS").write_text(
        format_sha256sums({name: sha256_file(directory / name) for name in names})
    )
    signer.sign_file(directory / "SHA256SUMS", directory / "SHA256SUMS.asc")
    return directory


@pytest.fixture
def signed(tmp_path: Path, plain_signer: Signer) -> Path:
    files = {"qemu-ga": b"\x7fELF agent", "qemu-guest-agent.service": SERVICE}
    return sign_output(make_output(tmp_path / "out" / "linux", "linux-static", files), plain_signer)


def verify(key: Path, directory: Path) -> int:
    return main(["verify", "--public-key", str(key), str(directory)])


def test_a_signed_output_verifies_and_is_the_tools_own(
    signed: Path, openpgp_keys, capsys: pytest.CaptureFixture[str]
) -> None:
    assert why_not_ours(signed) is None
    assert verify(openpgp_keys.plain_public, signed) == 0  # a binary public key file
    assert "good signature by " + openpgp_keys.plain in capsys.readouterr().err
    (signed / "logs" / "01-source.log").write_text("rewritten\n")
    assert "logs/01-source.log is missing or differs" in (why_not_ours(signed) or "")


def _tamper(directory: Path) -> None:
    (directory / "qemu-ga").write_bytes(b"\x7fELF evil")


def _tamper_log(directory: Path) -> None:
    (directory / "logs" / "01-source.log").write_text("edited\n")


def _missing(directory: Path) -> None:
    (directory / "qemu-guest-agent.service").unlink()


def _extra(directory: Path) -> None:
    (directory / "libevil.so").write_bytes(b"evil")


def _extra_log(directory: Path) -> None:
    (directory / "logs" / "99-evil.log").write_text("evil\n")


def _link_out(directory: Path) -> None:
    (directory / "passwd").symlink_to("/etc/passwd")


def _listed_link(directory: Path) -> None:
    """A listed file replaced by a link to the same bytes elsewhere: never followed."""
    outside = directory.parent / "outside"
    outside.write_bytes((directory / "qemu-ga").read_bytes())
    (directory / "qemu-ga").unlink()
    (directory / "qemu-ga").symlink_to(outside)


def _linked_folder(directory: Path) -> None:
    """logs/ swapped for a link to a copy of it outside: the listed logs are not read."""
    outside = directory.parent / "logs-outside"
    os.rename(directory / "logs", outside)
    (directory / "logs").symlink_to(outside)


def _no_signature(directory: Path) -> None:
    (directory / "SHA256SUMS.asc").unlink()


def _sums_edited(directory: Path) -> None:
    """The attacker's way around a changed file: change its line too."""
    text = (directory / "SHA256SUMS").read_text()
    (directory / "qemu-ga").write_bytes(b"\x7fELF evil")
    digest = sha256_file(directory / "qemu-ga")
    lines = [
        f"{digest}  qemu-ga" if line.endswith("  qemu-ga") else line for line in text.splitlines()
    ]
    (directory / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def _no_sums(directory: Path) -> None:
    (directory / "SHA256SUMS").unlink()


@pytest.mark.parametrize(
    "change, code, said",
    [
        (_tamper, 18, "qemu-ga differs from its SHA256SUMS line"),
        (_tamper_log, 18, "logs/01-source.log differs from its SHA256SUMS line"),
        (_listed_link, 18, "qemu-ga (a symbolic link, or under one) differs"),
        (_linked_folder, 18, "logs/01-source.log (a symbolic link, or under one) differs"),
        (_missing, 19, "qemu-guest-agent.service is listed in SHA256SUMS but missing"),
        (_no_sums, 19, "SHA256SUMS is missing"),
        (_extra, 20, "libevil.so is there but not listed in SHA256SUMS"),
        (_extra_log, 20, "logs/99-evil.log is there but not listed"),
        (_link_out, 20, "passwd is there but not listed"),
        (_no_signature, 16, "SHA256SUMS.asc is missing"),
        (_sums_edited, 17, "SHA256SUMS.asc is a bad signature"),
    ],
)
def test_each_way_a_signed_directory_is_wrong_has_its_code(
    signed: Path,
    openpgp_keys,
    capsys: pytest.CaptureFixture[str],
    change,
    code: int,
    said: str,
) -> None:
    change(signed)
    assert verify(openpgp_keys.plain_public, signed) == code
    err = one_error(capsys)
    assert said in err and str(signed) in err, err


def test_a_signature_by_another_key_is_refused(
    signed: Path, openpgp_keys, capsys: pytest.CaptureFixture[str]
) -> None:
    """A good signature, by a key that is not the one given: refused all the same."""
    assert verify(openpgp_keys.signer_public, signed) == 17
    err = one_error(capsys)
    assert "made by another key" in err and openpgp_keys.signer in err


def test_a_signature_by_a_revoked_key_is_refused(
    tmp_path: Path, openpgp_keys, capsys: pytest.CaptureFixture[str]
) -> None:
    """Signed while the key was good; checked with its public key as published since, with
    the revocation: refused (gpg says REVKEYSIG)."""
    from tests.openpgp_keys import Keyring

    keyring = Keyring(tmp_path / "home")
    try:
        fingerprint = keyring.make("Soon Revoked <soon@example.org>")
        secret = keyring.export_secret(fingerprint, tmp_path / "soon.asc")
        directory = make_output(tmp_path / "out", "linux-static", {"qemu-ga": b"\x7fELF"})
        with open_signer(SigningRequest(key_file=secret)) as signer:
            sign_output(directory, signer)
        keyring.revoke(fingerprint)
        public = keyring.export_public(fingerprint, tmp_path / "soon.pub")
    finally:
        keyring.close()
    assert verify(public, directory) == 17
    assert "has been revoked" in one_error(capsys)


def test_a_key_file_of_two_keys_or_none_is_a_usage_of_the_wrong_file(
    signed: Path, tmp_path: Path, openpgp_keys, capsys: pytest.CaptureFixture[str]
) -> None:
    both = tmp_path / "both.pub"
    both.write_bytes(
        openpgp_keys.signer_public.read_bytes() + openpgp_keys.revoked_public.read_bytes()
    )
    assert verify(both, signed) == 3
    assert "holds 2 keys" in one_error(capsys)
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key\n")
    assert verify(garbage, signed) == 3
    assert "not an OpenPGP key file" in one_error(capsys)


def test_verify_public_key_takes_no_build_option_and_no_engine(
    signed: Path, openpgp_keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder.commands import verify as verify_command

    monkeypatch.setattr(verify_command, "Engine", None)  # any use would fail loudly
    key = str(openpgp_keys.plain_public)
    assert main(["verify", "--public-key", key, str(signed), "--against", "x"]) == 2
    assert main(["verify", "--public-key", key, str(signed), "--locked"]) == 2
    link = signed.parent / "link"
    link.symlink_to(signed)
    assert main(["verify", "--public-key", key, str(link)]) == 3
    assert verify(openpgp_keys.plain_public, signed) == 0


def test_release_takes_signed_inputs_and_signs_itself(
    tmp_path: Path,
    openpgp_keys,
    plain_signer: Signer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    inputs = [
        sign_output(make_output(out / "a", "linux-a", {"qemu-ga-a": b"\x7fELF a"}), plain_signer),
        sign_output(make_output(out / "b", "linux-b", {"qemu-ga-b": b"\x7fELF b"}), plain_signer),
    ]
    monkeypatch.setenv("QGA_SIGNING_PASSPHRASE", openpgp_keys.passphrase)
    target = tmp_path / "release"
    args = ["release", *map(str, inputs), "--output", str(target)]
    signing = ["--signing-key", str(openpgp_keys.signer_secret)]
    checked = ["--input-public-key", str(openpgp_keys.plain_public)]
    assert main([*args, *signing, *checked]) == 0, capsys.readouterr().err
    record = json.loads((target / "release.json").read_text())
    assert record["signing"] == {"openpgp_fingerprint": openpgp_keys.signer}
    assert "SHA256SUMS.asc" not in (target / "SHA256SUMS").read_text()
    assert why_not_release(target) is None and why_not_ours(target) is None
    check_as_a_user(target, openpgp_keys.signer_public, tmp_path / "user-home")
    assert verify(openpgp_keys.signer_public, target) == 0
    assert verify(openpgp_keys.plain_public, target) == 17  # the inputs' key did not sign it
    capsys.readouterr()

    # A signed release is replaced by a new one (unsigned, and inputs taken without a key).
    assert main(args) == 0
    assert not (target / "SHA256SUMS.asc").exists() and "signing" not in json.loads(
        (target / "release.json").read_text()
    )

    # Inputs checked against a key: an unsigned one, or one signed by another key, is refused.
    (inputs[1] / "SHA256SUMS.asc").unlink()
    assert main([*args, *checked]) == 16
    assert f"release input {inputs[1]}: SHA256SUMS.asc is missing" in one_error(capsys)
    assert main([*args, "--input-public-key", str(openpgp_keys.signer_public)]) == 17
    assert "made by another key" in one_error(capsys)


def test_release_refuses_an_unusable_signing_key_before_reading_inputs(
    tmp_path: Path, openpgp_keys, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_output(tmp_path / "out" / "a", "linux-a", {"qemu-ga-a": b"\x7fELF a"})
    target = tmp_path / "release"
    key = ["--signing-key", str(openpgp_keys.expired_secret)]
    assert main(["release", str(source), "--output", str(target), *key]) == 15
    assert "has expired" in one_error(capsys)
    assert not target.exists()


def test_a_signed_input_whose_records_changed_is_refused(
    signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a key the signature is not checked, but the signed list still is: a manifest,
    provenance or step log that differs from its line is a changed input."""
    (signed / "logs" / "01-source.log").write_text("edited\n")
    assert main(["release", str(signed), "--output", str(tmp_path / "r")]) == 3
    assert "logs/01-source.log does not match its SHA256SUMS line" in one_error(capsys)


def test_a_signed_input_whose_signature_is_a_link_is_refused(
    signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = tmp_path / "elsewhere.asc"
    os.rename(signed / "SHA256SUMS.asc", moved)
    (signed / "SHA256SUMS.asc").symlink_to(moved)
    assert main(["release", str(signed), "--output", str(tmp_path / "r")]) == 3
    assert "SHA256SUMS.asc is not a regular file" in one_error(capsys)
    assert why_not_ours(signed) is not None  # and it is not the tool's own any more


def test_gpg_missing_is_a_host_tool_error(
    signed: Path, openpgp_keys, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("PATH", str(Path(signed).parent))  # no gpg there
    assert verify(openpgp_keys.plain_public, signed) == 13
    assert "need gpg" in one_error(capsys)


def test_sha256sum_agrees_with_a_signed_output(signed: Path) -> None:
    result = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=signed, capture_output=True, check=False
    )
    assert result.returncode == 0


def test_a_folder_that_cannot_be_read_is_a_clear_error_not_a_crash(
    signed: Path, openpgp_keys: Any, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """Root reads any folder, so the refusal an unprivileged user gets is played by failing the
    open of that one folder."""
    from builder.outputs import signed_dir

    (signed / "extra").mkdir()
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if path == "extra":
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(signed_dir.os, "open", refuse)
    code = main(["verify", "--public-key", str(openpgp_keys.plain_public), str(signed)])
    err = capsys.readouterr().err
    assert code not in (0, 70) and "extra/ cannot be read (Permission denied)" in err, err
