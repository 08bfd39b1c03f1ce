"""Signed outputs on real builds, checked as a user checks them. The session's default build
(`patched_build`) left its artifacts in the artifact cache, so `run --signing-key` publishes
from the cache and signs; so does the session's Windows build, Authenticode-signed with a key in
a softhsm2 token as it was built (`osslsigncode verify -CAfile` checks each file); then
`gpg --verify` in a home holding only the public key, `sha256sum --strict -c` and
`verify --public-key`; then `release` over the two signed outputs, its inputs checked against
the key and the release signed anew. The provenance is signed too (`--attestation-key`: an
Ed25519 key for the runs, an encrypted ECDSA P-256 key for the release) and checked with the
real `cosign verify-blob-attestation` (tests/cosign.py), as the README tells users to."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from builder.config.settings import current
from builder.formats import cabinet
from builder.formats.checksums import parse_sha256sums
from builder.formats.dsse import parse_lines
from builder.formats.signed_sums import artifact_lines
from tests.authenticode_keys import (
    PFX_PASSWORD,
    TOKEN_PIN,
    AuthenticodeKeys,
    make_keys,
    token_signing,
)
from tests.cosign import verify_blob_attestation, write_key
from tests.helpers import DEFAULT_RECIPE, WINDOWS_RECIPE, leftover_containers, run_cli
from tests.integration.conftest import path_without_wine
from tests.openpgp_keys import check_as_a_user


def _cached(
    build: Path, recipe: Path, scratch: Path, env: dict[str, str], options: list[str] | None = None
) -> None:
    """The session's build of `recipe` in the artifact cache (as test_artifact_cache does: the
    suite's other runs of the recipe may have pruned its entry; then it is stored again)."""
    key = json.loads((build / "manifest.json").read_text())["cache"]["key"]
    if not (current().cache_root / "artifacts" / key).exists():
        result = run_cli("run", str(recipe), "--output", str(scratch), *(options or []), env=env)
        assert result.returncode == 0, result.stderr[-3000:]


def _signed_run(
    recipe: Path,
    out: Path,
    keys,
    env: dict[str, str],
    attestation: Path,
    more: list[str] | None = None,
) -> str:
    result = run_cli(
        "run",
        str(recipe),
        "--output",
        str(out),
        "--signing-key",
        str(keys.signer_secret),
        "--attestation-key",
        str(attestation),
        *(more or []),
        env={"QGA_SIGNING_PASSPHRASE": keys.passphrase, **env},
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert keys.passphrase not in result.stdout + result.stderr
    return result.stderr


def _no_passphrase_in(directory: Path, passphrase: str) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            assert passphrase.encode() not in path.read_bytes(), path


def test_signed_runs_from_the_cache_and_a_signed_release(
    patched_build: Path,
    windows_build: Path,
    authenticode_keys: AuthenticodeKeys,
    openpgp_keys,
    tmp_path: Path,
    engine,
) -> None:
    keys = openpgp_keys
    run_key, run_public = write_key(tmp_path, "runs", ed25519.Ed25519PrivateKey.generate())
    linux = tmp_path / "linux"
    _cached(patched_build, DEFAULT_RECIPE, tmp_path / "refill-linux", {})
    log = _signed_run(DEFAULT_RECIPE, linux, keys, {}, run_key)
    assert "artifact cache hit" in log and "signing key checked" in log
    assert "] compile" not in log  # published from the cache: nothing built twice
    manifest = json.loads((linux / "manifest.json").read_text())
    assert manifest["cache"]["hit"] is True
    assert manifest["signing"]["openpgp_fingerprint"] == keys.signer
    assert manifest["signing"]["dsse_algorithm"] == "ed25519"
    # The artifacts are the build's own bytes; the signed list adds the records and logs.
    built = parse_sha256sums((patched_build / "SHA256SUMS").read_text())
    signed = parse_sha256sums((linux / "SHA256SUMS").read_text())
    assert artifact_lines(signed) == built
    assert {"manifest.json", "provenance.intoto.json", "provenance.intoto.jsonl"} <= set(signed)
    assert "SHA256SUMS.asc" not in signed
    _no_passphrase_in(linux, keys.passphrase)
    check_as_a_user(linux, keys.signer_public, tmp_path / "user-home")
    checked = run_cli("verify", "--public-key", str(keys.signer_public), str(linux))
    assert checked.returncode == 0, checked.stderr
    unsigned = run_cli("verify", "--public-key", str(keys.signer_public), str(patched_build))
    assert unsigned.returncode == 16, unsigned.stderr
    _cosign_checks(linux / "provenance.intoto.jsonl", linux, run_public, tmp_path / "tampered")
    both = ["--public-key", str(keys.signer_public), "--cosign-key", str(run_public)]
    checked = run_cli("verify", *both, str(linux))
    assert checked.returncode == 0, checked.stderr

    windows = tmp_path / "windows"
    _authenticode_signed_windows(windows, windows_build, authenticode_keys, keys, run_key, tmp_path)

    release = tmp_path / "release"
    release_key, release_public = write_key(
        tmp_path, "release", ec.generate_private_key(ec.SECP256R1()), b"release pass"
    )
    merged = run_cli(
        "release",
        str(linux),
        str(windows),
        "--output",
        str(release),
        "--input-public-key",
        str(keys.signer_public),
        "--signing-key",
        str(keys.signer_secret),
        "--signing-passphrase-file",
        str(_passphrase_file(tmp_path, keys.passphrase)),
        "--attestation-key",
        str(release_key),
        env={"QGA_ATTESTATION_PASSPHRASE": "release pass"},
        timeout=600,
    )
    assert merged.returncode == 0, merged.stderr[-4000:]
    record = json.loads((release / "release.json").read_text())
    assert record["signing"]["openpgp_fingerprint"] == keys.signer
    assert record["signing"]["dsse_algorithm"] == "ecdsa-p256-sha256"
    _no_passphrase_in(release, keys.passphrase)
    _no_passphrase_in(release, "release pass")
    lines = (release / "provenance.intoto.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 2  # one envelope per recipe: cosign takes one at a time
    for number, line in enumerate(lines):
        envelope = tmp_path / f"release-{number}.intoto.jsonl"
        envelope.write_bytes(line)
        _cosign_checks(envelope, release, release_public, tmp_path / f"tampered-{number}")
    check_as_a_user(release, keys.signer_public, tmp_path / "release-home")
    both = ["--public-key", str(keys.signer_public), "--cosign-key", str(release_public)]
    checked = run_cli("verify", *both, str(release))
    assert checked.returncode == 0, checked.stderr
    assert leftover_containers(engine) == []


def _authenticode_signed_windows(
    windows: Path, signed_build: Path, code: AuthenticodeKeys, keys, run_key: Path, tmp_path: Path
) -> None:
    """The Windows recipe signed three ways: Authenticode with the key in a softhsm2 token
    (time-stamped by an offline authority when osslsigncode has one), SHA256SUMS with OpenPGP,
    the provenance with DSSE. The session's Windows build was Authenticode-signed with the same
    token as it was built (its MSI made again from the signed files and installed under wine by
    its check) and stored in the cache, keyed by the certificate: this run publishes it from
    there and adds the other two signatures. That signing changes nothing but signatures (the
    files before it are an unsigned build's, bit for bit) is the full tier's
    `test_verify_compares_a_signed_windows_build_without_its_signatures`."""
    options, env = token_signing(code)
    env["PATH"] = path_without_wine(tmp_path / "bin-without-wine")
    _cached(signed_build, WINDOWS_RECIPE, tmp_path / "refill-windows", env, options)
    log = _signed_run(WINDOWS_RECIPE, windows, keys, env, run_key, options)
    assert "Authenticode key checked" in log and TOKEN_PIN not in log
    assert "artifact cache hit" in log and "] compile" not in log
    stamped = "--authenticode-tsa-key" in options
    manifest = json.loads((windows / "manifest.json").read_text())
    record = manifest["authenticode"]
    assert record["key_store"] == "pkcs11"
    assert (record["timestamp"] or "").startswith("RFC 3161") == stamped
    built = parse_sha256sums((signed_build / "SHA256SUMS").read_text())
    assert artifact_lines(parse_sha256sums((windows / "SHA256SUMS").read_text())) == built
    msi = "qemu-ga-x86_64.msi"
    for name in ("qemu-ga.exe", msi):
        assert record["files"][name]["sha256"] == built[name]
        assert record["files"][name]["unsigned_sha256"] != built[name]
    contents = manifest["msi_contents"][msi]
    before = record["files"][msi]["unsigned_files"]  # the MSI's files as built, before signing
    assert set(before) == set(contents["files"])
    assert len([n for n in before if before[n] != contents["files"][n]]) >= 10  # the PE files
    install = contents["install_check"]  # the signed MSI's own, under wine
    assert install["msiexec_install_exit"] == 0 and install["msiexec_uninstall_exit"] == 0
    assert len(install["files_installed"]) == len(contents["files"])
    trust = ["-CAfile", str(code.ca)] + (["-TSA-CAfile", str(code.ca)] if stamped else [])
    members = tmp_path / "msi-members"
    members.mkdir()
    checked = [windows / "qemu-ga.exe", windows / msi]
    for name, data in cabinet.msi_files(windows / msi).items():
        if name.endswith((".exe", ".dll", "_lib")) and data[:2] == b"MZ":
            (members / name).write_bytes(data)
            checked.append(members / name)
    assert len(checked) >= 10  # the agent, the VSS DLL, GLib and the other DLLs, the MSI
    for path in checked:
        done = subprocess.run(
            ["osslsigncode", "verify", *trust, "-in", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{path.name}: {done.stdout}{done.stderr}"
        assert "Signature verification: ok" in done.stdout
    _no_passphrase_in(windows, TOKEN_PIN)


@pytest.mark.full
def test_verify_compares_a_signed_windows_build_without_its_signatures(
    windows_build: Path, tmp_path: Path, engine
) -> None:
    """A PKCS#12-signed build, then `verify RECIPE --against` its SHA256SUMS: the rebuild has
    no key; the exe is compared with its signature removed, the MSI by its files."""
    code = make_keys(tmp_path / "authenticode")
    signed = tmp_path / "signed"
    env = {
        "PATH": path_without_wine(tmp_path / "bin-without-wine"),
        "QGA_AUTHENTICODE_PASSWORD": PFX_PASSWORD,
    }
    result = run_cli(
        "run", str(WINDOWS_RECIPE), "--output", str(signed), "--authenticode-pfx", str(code.pfx),
        env=env, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads((signed / "manifest.json").read_text())["authenticode"]
    assert record["key_store"] == "pkcs12" and record["timestamp"] is None
    checked = run_cli(
        "verify", str(WINDOWS_RECIPE), "--against", str(signed / "SHA256SUMS"),
        "--output", str(tmp_path / "verify"), env=env, timeout=1800,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr[-4000:]
    assert "qemu-ga.exe: compared with its Authenticode signature removed" in checked.stderr
    assert "each with its Authenticode signature removed" in checked.stderr
    assert leftover_containers(engine) == []


def _cosign_checks(envelope: Path, directory: Path, public: Path, scratch: Path) -> None:
    """cosign accepts the envelope for each artifact its statement names, and refuses a
    changed copy of one and another key."""
    statement = parse_lines(envelope.read_bytes())[0].statement()
    names = [subject["name"] for subject in statement["subject"]]
    assert names
    for name in names:
        result = verify_blob_attestation(public, envelope, directory / name)
        assert result.returncode == 0 and "Verified OK" in result.stderr, result.stderr
    scratch.mkdir()
    changed = scratch / names[0]
    changed.write_bytes((directory / names[0]).read_bytes() + b"\0")
    refused = verify_blob_attestation(public, envelope, changed)
    assert refused.returncode != 0 and "no matching subject digest" in refused.stderr
    _, other = write_key(scratch, "other", ed25519.Ed25519PrivateKey.generate())
    refused = verify_blob_attestation(other, envelope, directory / names[0])
    assert refused.returncode != 0, refused.stderr


def _passphrase_file(directory: Path, passphrase: str) -> Path:
    path = directory / "passphrase"
    path.write_text(passphrase + "\n")
    path.chmod(0o600)
    return path
