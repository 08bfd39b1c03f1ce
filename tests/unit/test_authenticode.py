"""Authenticode on the host, with the real osslsigncode and a real softhsm2 token: keys checked
before anything is built, signatures that `osslsigncode verify -CAfile` accepts, signatures
removed to the very bytes that were signed, and the options' rules. The MSI reader is checked
against MSIs that wixl makes here."""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from builder.commands.signing import AUTHENTICODE_OPTIONS, authenticode_key
from builder.errors import HostToolError, SigningKeyError, UsageError
from builder.formats import cabinet
from builder.formats.pe import is_signed, minimal_pe, parse_pe, without_signing_traces
from builder.host import authenticode
from builder.host.authenticode import AuthenticodeKey, open_signer
from builder.outputs.unsigned_view import unsigned_view
from tests.authenticode_keys import (
    KEY_URI,
    PFX_PASSWORD,
    SOFTHSM_MODULE,
    TOKEN_PIN,
    AuthenticodeKeys,
    make_keys,
)
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> AuthenticodeKeys:
    return make_keys(tmp_path_factory.mktemp("authenticode"))


@pytest.fixture
def token(keys: AuthenticodeKeys, monkeypatch: pytest.MonkeyPatch) -> AuthenticodeKeys:
    monkeypatch.setenv("SOFTHSM2_CONF", str(keys.softhsm_conf))
    return keys


def pfx_key(keys: AuthenticodeKeys, password: str = PFX_PASSWORD, **more) -> AuthenticodeKey:
    return AuthenticodeKey(
        pfx=keys.pfx, password=password.encode(), password_source="from a test", **more
    )


def token_key(keys: AuthenticodeKeys, pin: str = TOKEN_PIN) -> AuthenticodeKey:
    return AuthenticodeKey(
        module=SOFTHSM_MODULE,
        key_uri=KEY_URI,
        certificate=keys.certificate,
        password=pin.encode(),
        password_source="from a test",
    )


def osslsigncode_verify(path: Path, keys: AuthenticodeKeys, *more: str) -> str:
    done = subprocess.run(
        ["osslsigncode", "verify", "-CAfile", str(keys.ca), *more, "-in", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_pe_signed_with_the_pfx_verifies_and_strips_back_to_its_bytes(
    keys: AuthenticodeKeys, tmp_path: Path
) -> None:
    signer = open_signer(pfx_key(keys))
    assert "CN=qga-builder test signer" in signer.subject
    unsigned = tmp_path / "tiny.exe"
    unsigned.write_bytes(minimal_pe())
    assert parse_pe(unsigned.read_bytes()).machine == 0x8664 and not is_signed(minimal_pe())
    signed = tmp_path / "signed.exe"
    signer.sign(unsigned, signed, 1_700_000_000)
    assert is_signed(signed.read_bytes())
    assert "Signature verification: ok" in osslsigncode_verify(signed, keys)
    again = tmp_path / "again.exe"
    signer.sign(unsigned, again, 1_700_000_000)
    assert again.read_bytes() == signed.read_bytes()  # an RSA key, a fixed signing time
    stripped = tmp_path / "stripped.exe"
    authenticode.remove_signature(signed, stripped)
    assert stripped.read_bytes() == unsigned.read_bytes()
    record = signer.record()
    assert record["key_store"] == "pkcs12" and record["timestamp"] is None
    assert record["certificate_sha256"] == signer.fingerprint and "osslsigncode" in record["tool"]
    assert PFX_PASSWORD not in repr(record)


def test_the_softhsm2_token_signs(token: AuthenticodeKeys, tmp_path: Path) -> None:
    signer = open_signer(token_key(token))
    unsigned = tmp_path / "tiny.exe"
    unsigned.write_bytes(minimal_pe())
    signer.sign(unsigned, tmp_path / "signed.exe", 1_700_000_000)
    assert "Signature verification: ok" in osslsigncode_verify(tmp_path / "signed.exe", token)
    assert signer.record()["key_store"] == "pkcs11"
    # The same certificate in a file and in a token: the same identity, another key store.
    assert signer.fingerprint == open_signer(pfx_key(token)).fingerprint


def test_a_wrong_pin_or_password_stops_before_anything_is_built(token: AuthenticodeKeys) -> None:
    with pytest.raises(SigningKeyError, match="cannot sign") as caught:
        open_signer(token_key(token, pin="918273"))
    assert "918273" not in caught.value.message
    with pytest.raises(SigningKeyError, match="password") as caught:
        open_signer(pfx_key(token, password="not it"))
    assert "not it" not in caught.value.message


def test_a_certificate_not_for_code_signing_is_refused(keys: AuthenticodeKeys) -> None:
    key = AuthenticodeKey(
        pfx=keys.not_for_code, password=PFX_PASSWORD.encode(), password_source="from a test"
    )
    with pytest.raises(SigningKeyError, match="not for code signing"):
        open_signer(key)


def test_an_offline_time_stamp_verifies(keys: AuthenticodeKeys, tmp_path: Path) -> None:
    """With osslsigncode 2.7 or newer (its built-in authority); before (Debian 12's 2.5) the
    option is refused with a clear error, before anything is signed."""
    key = pfx_key(keys, tsa_certificate=keys.tsa_certificate, tsa_key=keys.tsa_key)
    if not authenticode.offline_time_stamps():
        with pytest.raises(HostToolError, match=r"needs osslsigncode 2\.7"):
            open_signer(key)
        return
    signer = open_signer(key)
    unsigned = tmp_path / "tiny.exe"
    unsigned.write_bytes(minimal_pe())
    signer.sign(unsigned, tmp_path / "stamped.exe", 1_700_000_000)
    printed = osslsigncode_verify(tmp_path / "stamped.exe", keys, "-TSA-CAfile", str(keys.ca))
    assert "Timestamp Server Signature verification: ok" in printed
    assert signer.record()["timestamp"].startswith("RFC 3161")


def test_osslsigncode_missing_is_a_host_tool_error(
    keys: AuthenticodeKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(HostToolError, match="osslsigncode is not installed"):
        open_signer(pfx_key(keys))


def namespace(**given) -> argparse.Namespace:
    values = dict.fromkeys(AUTHENTICODE_OPTIONS)
    values.update(given)
    return argparse.Namespace(**values)


def test_options_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert authenticode_key(namespace()) is None
    pfx = tmp_path / "k.p12"
    cases = [
        (dict(authenticode_key_uri=KEY_URI), "only with --authenticode-pfx"),
        (dict(authenticode_pkcs11_module=SOFTHSM_MODULE), "--authenticode-key-uri URI"),
        (dict(authenticode_pfx=pfx, authenticode_cert=pfx), "only with --authenticode-pkcs11"),
        (
            dict(
                authenticode_pkcs11_module=SOFTHSM_MODULE,
                authenticode_key_uri=KEY_URI + ";pin-value=1",
                authenticode_cert=pfx,
            ),
            "leave the PIN out",
        ),
        (dict(authenticode_pfx=pfx, authenticode_tsa_cert=pfx), "give both or neither"),
    ]
    for given, message in cases:
        with pytest.raises(UsageError, match=message):
            authenticode_key(namespace(**given))
    monkeypatch.setenv("QGA_AUTHENTICODE_PASSWORD", "from env")
    key = authenticode_key(namespace(authenticode_pfx=pfx))
    assert key is not None and key.password == b"from env"
    assert "QGA_AUTHENTICODE_PASSWORD" not in os.environ  # taken out: no child inherits it
    secret = tmp_path / "password"
    secret.write_text("from file\n")
    key = authenticode_key(namespace(authenticode_pfx=pfx, authenticode_password_file=secret))
    assert key is not None and key.password == b"from file" and key.pfx == pfx.absolute()


def wixl_msi(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    shutil.copy(ROOT / "tests" / "data" / "tiny.wxs", directory / "tiny.wxs")
    subprocess.run(
        ["wixl", "-a", "x64", "-o", "t.msi", "tiny.wxs"],
        cwd=directory,
        check=True,
        capture_output=True,
    )
    return directory / "t.msi"


def test_the_msi_reader_gives_back_what_wixl_packed(tmp_path: Path) -> None:
    rng = random.Random(7)
    # Over 32 KiB each: several MSZIP blocks, each inflated with the one before as its window.
    text = "".join(rng.choice(["qemu ", "guest ", "agent\n", "exec "]) for _ in range(40000))
    noise = rng.randbytes(70000)
    msi = wixl_msi(tmp_path, {"a.txt": text.encode(), "b.dll": minimal_pe() + noise})
    files = cabinet.msi_files(msi)
    assert {name: hashlib.sha256(data).hexdigest() for name, data in files.items()} == {
        "f1": hashlib.sha256(text.encode()).hexdigest(),
        "f2": hashlib.sha256(minimal_pe() + noise).hexdigest(),
    }


def test_a_damaged_msi_is_a_clear_error(tmp_path: Path) -> None:
    msi = wixl_msi(tmp_path, {"a.txt": b"hello\n", "b.dll": minimal_pe()})
    data = bytearray(msi.read_bytes())
    (tmp_path / "cut.msi").write_bytes(bytes(data[:1000]))
    with pytest.raises(cabinet.CabinetError, match=r"cut\.msi"):
        cabinet.msi_files(tmp_path / "cut.msi")


def test_an_unaligned_file_compares_equal_once_its_signature_is_removed(
    keys: AuthenticodeKeys, tmp_path: Path
) -> None:
    """Signing pads a file to 8 bytes and sets its CheckSum; removing the signature keeps both
    (9 of the 11 PE files of the real MSI are unaligned): compared without those traces."""
    data = minimal_pe() + b"tail"  # 0x404 bytes
    unsigned, signed, stripped = (tmp_path / n for n in ("u.dll", "s.dll", "r.dll"))
    unsigned.write_bytes(data)
    open_signer(pfx_key(keys)).sign(unsigned, signed, 1_700_000_000)
    authenticode.remove_signature(signed, stripped)
    assert stripped.read_bytes() != data
    assert without_signing_traces(stripped.read_bytes()) == without_signing_traces(data)


def test_verify_s_view_of_a_signed_output(keys: AuthenticodeKeys, tmp_path: Path) -> None:
    """A published directory with a signed exe and an MSI of signed files, against a rebuild
    of unsigned ones: the same; a rebuild that differs in one DLL: different."""
    signer = open_signer(pfx_key(keys))
    dll = minimal_pe() + b"odd length"
    built, published = tmp_path / "built", tmp_path / "published"
    built.mkdir()
    published.mkdir()
    (built / "qemu-ga.exe").write_bytes(minimal_pe())
    signer.sign(built / "qemu-ga.exe", published / "qemu-ga.exe", 1_700_000_000)
    (tmp_path / "u.dll").write_bytes(dll)
    signer.sign(tmp_path / "u.dll", tmp_path / "s.dll", 1_700_000_000)
    shutil.copy(wixl_msi(tmp_path / "m1", {"a.txt": b"x\n", "b.dll": dll}), built / "q.msi")
    signed_files = {"a.txt": b"x\n", "b.dll": (tmp_path / "s.dll").read_bytes()}
    shutil.copy(wixl_msi(tmp_path / "m2", signed_files), published / "q.msi")
    names = ["q.msi", "qemu-ga.exe"]
    expected = {n: hashlib.sha256((published / n).read_bytes()).hexdigest() for n in names}
    view = unsigned_view(published, expected, built, names)
    for name in names:
        assert view.expected[name] == hashlib.sha256((built / name).read_bytes()).hexdigest()
    assert any("q.msi: compared by the files it holds" in note for note in view.notes)
    other = minimal_pe() + b"another"
    shutil.copy(wixl_msi(tmp_path / "m3", {"a.txt": b"x\n", "b.dll": other}), built / "q.msi")
    view = unsigned_view(published, expected, built, names)
    assert view.expected["q.msi"] == expected["q.msi"]  # left as published: compares different
    assert any("q.msi" in note and "differs" in note for note in view.notes)


def test_cabinets_wixl_never_writes_are_refused() -> None:
    header = bytearray(36)
    header[:4] = b"MSCF"
    struct.pack_into("<I4sBBHHH", header, 16, 36, b"", 3, 1, 1, 1, 0x2)  # next cabinet
    with pytest.raises(cabinet.CabinetError, match="spanning"):
        cabinet.read_cabinet(bytes(header))
    struct.pack_into("<I4sBBHHH", header, 16, 44, b"", 3, 1, 1, 1, 0)
    unterminated = bytes(header) + bytes(8) + struct.pack("<IIHHHH", 1, 0, 0, 0, 0, 0) + b"name"
    with pytest.raises(cabinet.CabinetError, match="malformed"):
        cabinet.read_cabinet(unterminated)
