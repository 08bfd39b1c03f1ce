"""Signed outputs on real builds, checked as a user checks them. No build of its own: the
session's default build (`patched_build`) and Windows build (`windows_build`) left their
artifacts in the artifact cache, so `run --signing-key` publishes from the cache and signs; then
`gpg --verify` in a home holding only the public key, `sha256sum --strict -c` and
`verify --public-key`; then `release` over the two signed outputs, its inputs checked against
the key and the release signed anew. The provenance is signed too (`--attestation-key`: an
Ed25519 key for the runs, an encrypted ECDSA P-256 key for the release) and checked with the
real `cosign verify-blob-attestation` (tests/cosign.py), as the README tells users to."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from builder.config.settings import current
from builder.formats.checksums import parse_sha256sums
from builder.formats.dsse import parse_lines
from builder.formats.signed_sums import artifact_lines
from tests.cosign import verify_blob_attestation, write_key
from tests.helpers import DEFAULT_RECIPE, WINDOWS_RECIPE, leftover_containers, run_cli
from tests.integration.conftest import path_without_wine
from tests.openpgp_keys import check_as_a_user


def _cached(build: Path, recipe: Path, scratch: Path, env: dict[str, str]) -> None:
    """The session's build of `recipe` in the artifact cache (as test_artifact_cache does: the
    suite's other runs of the recipe may have pruned its entry; then it is stored again)."""
    key = json.loads((build / "manifest.json").read_text())["cache"]["key"]
    if not (current().cache_root / "artifacts" / key).exists():
        result = run_cli("run", str(recipe), "--output", str(scratch), env=env)
        assert result.returncode == 0, result.stderr[-3000:]


def _signed_run(recipe: Path, out: Path, keys, env: dict[str, str], attestation: Path) -> str:
    result = run_cli(
        "run",
        str(recipe),
        "--output",
        str(out),
        "--signing-key",
        str(keys.signer_secret),
        "--attestation-key",
        str(attestation),
        env={"QGA_SIGNING_PASSPHRASE": keys.passphrase, **env},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert keys.passphrase not in result.stdout + result.stderr
    return result.stderr


def _no_passphrase_in(directory: Path, passphrase: str) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            assert passphrase.encode() not in path.read_bytes(), path


def test_signed_runs_from_the_cache_and_a_signed_release(
    patched_build: Path, windows_build: Path, openpgp_keys, tmp_path: Path, engine
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
    no_wine = {"PATH": path_without_wine(tmp_path / "bin-without-wine")}
    _cached(windows_build, WINDOWS_RECIPE, tmp_path / "refill-windows", no_wine)
    assert "artifact cache hit" in _signed_run(WINDOWS_RECIPE, windows, keys, no_wine, run_key)
    assert artifact_lines(parse_sha256sums((windows / "SHA256SUMS").read_text())) == (
        parse_sha256sums((windows_build / "SHA256SUMS").read_text())
    )

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
