"""Signing with the user's OpenPGP key, offline, on the host (no Docker): the key is checked
before anything is built (usable v4 signing key, then a trial signature with the passphrase),
a run's output is signed as it is staged (SHA256SUMS.asc over a SHA256SUMS that lists every
file), and what users run to check it passes: `gpg --verify` in a home that holds only the
public key, then `sha256sum --strict -c`. The passphrase never appears anywhere.

The orchestrator is driven by the fake engine (tests/fakes.py, the fixture of test_pipeline);
the keys are throwaway ones the host's gpg makes (tests/conftest.py: openpgp_keys)."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest

from builder import pipeline
from builder.cli import main
from builder.errors import SigningKeyError
from builder.formats import openpgp
from builder.formats.checksums import digest_tree, format_sha256sums, parse_sha256sums
from builder.host import openpgp as host_openpgp
from builder.host.openpgp import SigningRequest, open_signer
from builder.outputs import output_dir
from tests.fakes import FakeEngine
from tests.helpers import DEFAULT_RECIPE, write_variant
from tests.openpgp_keys import check_as_a_user, v6_secret_key
from tests.unit import test_pipeline

setup = test_pipeline.setup  # a recipe with a local source, a fake engine, a cache


def check_key(wanted: SigningRequest) -> None:
    with open_signer(wanted):
        pass


def request(keys, *, passphrase: str | None = None, key_file: Path | None = None):
    return SigningRequest(
        key_file=key_file or keys.signer_secret,
        passphrase=None if passphrase is None else passphrase.encode(),
        passphrase_source="from the test",
    )


def test_a_signed_run_lists_every_file_and_verifies_as_users_check_it(
    setup, openpgp_keys, tmp_path: Path
) -> None:
    plan, text, engine, cache = setup
    with open_signer(request(openpgp_keys, passphrase=openpgp_keys.passphrase)) as signer:
        result = pipeline.run(plan, engine, cache, text, signer=signer)
    out = result.output_dir
    sums = parse_sha256sums((out / "SHA256SUMS").read_text())
    logs = sorted(f"logs/{path.name}" for path in (out / "logs").iterdir())
    artifacts = [a["name"] for a in result.manifest["artifacts"]]
    records = ["manifest.json", "provenance.intoto.json", "sbom.spdx.json"]
    assert sorted(sums) == sorted([*artifacts, *records, *logs])
    assert "SHA256SUMS.asc" not in sums and logs
    assert (out / "SHA256SUMS.asc").read_text().startswith("-----BEGIN PGP SIGNATURE-----")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["signing"] == {"openpgp_fingerprint": openpgp_keys.signer}
    check_as_a_user(out, openpgp_keys.signer_public, tmp_path / "user-home")
    assert output_dir.why_not_ours(out) is None  # a signed output is the tool's own
    assert main(["verify", "--public-key", str(openpgp_keys.signer_public), str(out)]) == 0


def test_signing_changes_no_artifact_and_the_cache_serves_both_ways(
    setup, openpgp_keys, tmp_path: Path
) -> None:
    plan, text, engine, cache = setup
    unsigned = pipeline.run(plan, engine, cache, text)
    unsigned_sums = (unsigned.output_dir / "SHA256SUMS").read_bytes()
    artifacts = {a["name"]: a["sha256"] for a in unsigned.manifest["artifacts"]}

    served = FakeEngine()
    served.run_id = "fakerun00002"
    with open_signer(request(openpgp_keys, key_file=openpgp_keys.plain_secret)) as signer:
        signed = pipeline.run(plan, served, cache, text, signer=signer)
    assert served.created == []  # published from the artifact cache, and signed
    assert signed.manifest["cache"]["hit"] is True
    assert signed.manifest["signing"] == {"openpgp_fingerprint": openpgp_keys.plain}
    listed = parse_sha256sums((signed.output_dir / "SHA256SUMS").read_text())
    assert {name: listed[name] for name in artifacts} == artifacts
    check_as_a_user(signed.output_dir, openpgp_keys.plain_public, tmp_path / "home")

    # A signed run builds and stores; the entry stays unsigned, as an unsigned run serves it.
    rebuilt = FakeEngine()
    rebuilt.run_id = "fakerun00003"
    with open_signer(request(openpgp_keys, key_file=openpgp_keys.plain_secret)) as signer:
        pipeline.run(plan, rebuilt, cache, text, signer=signer, use_cache=False)
    assert len(rebuilt.created) == 1
    plain = FakeEngine()
    plain.run_id = "fakerun00004"
    again = pipeline.run(plan, plain, cache, text)
    assert plain.created == [] and again.manifest["cache"]["from_run"] == "fakerun00003"
    assert (again.output_dir / "SHA256SUMS").read_bytes() == unsigned_sums
    assert not (again.output_dir / "SHA256SUMS.asc").exists()
    assert "signing" not in again.manifest


def test_verify_against_a_signed_sums_compares_the_artifacts(
    setup, openpgp_keys, tmp_path: Path
) -> None:
    """`verify DIR --against` (and a rebuild's --against) with a signed publication's list:
    its manifest, provenance and log lines belong to that run and are left out."""
    plan, text, engine, cache = setup
    with open_signer(request(openpgp_keys, key_file=openpgp_keys.plain_secret)) as signer:
        signed = pipeline.run(plan, engine, cache, text, signer=signer)
    published = tmp_path / "published-SHA256SUMS"
    published.write_bytes((signed.output_dir / "SHA256SUMS").read_bytes())
    other = FakeEngine()
    other.run_id = "fakerun00002"
    unsigned = pipeline.run(plan, other, cache, text, use_cache=False)
    assert main(["verify", str(unsigned.output_dir), "--against", str(published)]) == 0
    assert main(["verify", str(signed.output_dir)]) == 0  # its own list: every file


def test_a_wrong_or_missing_passphrase_is_refused_before_anything(openpgp_keys) -> None:
    with pytest.raises(SigningKeyError, match=r"passphrase .* is wrong") as caught:
        check_key(request(openpgp_keys, passphrase="not the passphrase"))
    assert caught.value.exit_code == 15
    assert openpgp_keys.signer in caught.value.message
    with pytest.raises(SigningKeyError, match="protected by a passphrase and none was given"):
        check_key(request(openpgp_keys))


@pytest.mark.parametrize(
    "which, expected",
    [
        ("expired_secret", "has expired"),
        ("revoked_secret", "has been revoked"),
        ("signer_public", "holds no secret key"),
    ],
)
def test_an_unusable_key_is_refused(openpgp_keys, which: str, expected: str) -> None:
    with pytest.raises(SigningKeyError, match=expected):
        check_key(request(openpgp_keys, key_file=getattr(openpgp_keys, which)))


def test_a_v6_key_is_refused_by_its_packet_version(tmp_path: Path) -> None:
    """The host's gpg (2.2) cannot make v6 keys: a crafted minimal v6 secret key packet, armored
    with its CRC, is read by the tool's own packet reader and refused before gpg sees it."""
    key = tmp_path / "v6.asc"
    key.write_text(v6_secret_key())
    assert openpgp.primary_key_versions(key.read_bytes()) == [("secret key", 6)]
    with pytest.raises(SigningKeyError, match="a version 6 secret key; only version 4"):
        check_key(SigningRequest(key_file=key))
    # ... and a listed key with a v5/v6 fingerprint (64 hex digits) is refused too.
    listing = "sec:-:255:27:0123456789ABCDEF:1700000000:::-:::scSC:::+::ed25519:::0:\n"
    listing += "fpr:::::::::" + "AB" * 32 + ":\n"
    (listed,) = openpgp.parse_colons(listing)
    assert "not a version 4 key" in (openpgp.signing_problem(listed) or "")


def test_the_packet_reader_takes_binary_and_armored_keys(openpgp_keys) -> None:
    assert openpgp.primary_key_versions(openpgp_keys.plain_public.read_bytes()) == [
        ("public key", 4)
    ]
    assert openpgp.primary_key_versions(openpgp_keys.signer_secret.read_bytes()) == [
        ("secret key", 4)
    ]
    with pytest.raises(openpgp.KeyFormatError):
        openpgp.primary_key_versions(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n")


def test_a_key_id_is_taken_from_the_users_gnupg_home(
    openpgp_keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GNUPGHOME", str(openpgp_keys.keyring.home))
    wanted = SigningRequest(key_id=openpgp_keys.signer, passphrase=openpgp_keys.passphrase.encode())
    with open_signer(wanted) as signer:
        assert signer.fingerprint == openpgp_keys.signer
        assert signer.sign_bytes(b"data\n").startswith(b"-----BEGIN PGP SIGNATURE-----")
    with pytest.raises(SigningKeyError, match="no secret key matches it"):
        check_key(SigningRequest(key_id="nobody@example.org"))
    with pytest.raises(SigningKeyError, match="names 4 secret keys"):
        check_key(SigningRequest(key_id="example.org"))


def _no_engine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record any attempt to reach the engine or build (there must be none)."""
    reached: list[str] = []

    def refuse(*args, **kwargs):
        reached.append("engine")
        raise AssertionError("the engine was reached before the signing key was checked")

    from builder.commands import run

    monkeypatch.setattr(run, "Engine", refuse)
    monkeypatch.setattr(pipeline, "run", refuse)
    return reached


@pytest.mark.parametrize("matrix", [False, True])
def test_run_refuses_a_wrong_passphrase_before_any_build(
    openpgp_keys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    matrix: bool,
) -> None:
    reached = _no_engine(monkeypatch)
    monkeypatch.setenv("QGA_SIGNING_PASSPHRASE", "a wrong passphrase")
    key = ["--signing-key", str(openpgp_keys.signer_secret)]
    if matrix:
        twin = write_variant(tmp_path / "twin", "twin")
        argv = ["run", str(DEFAULT_RECIPE), str(twin), "--output-root", str(tmp_path / "out")]
    else:
        argv = ["run", str(DEFAULT_RECIPE), "--output", str(tmp_path / "out")]
    code = main([*argv, *key, "--allow-outside-project"])
    err = capsys.readouterr().err
    assert code == 15, err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "QGA_SIGNING_PASSPHRASE" in err and "is wrong" in err
    assert "a wrong passphrase" not in err
    assert reached == [] and not (tmp_path / "out").exists()


def test_signing_options_are_checked_on_the_command_line(
    openpgp_keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--output", str(tmp_path / "out")]
    both = ["--signing-key", str(openpgp_keys.plain_secret), "--signing-key-id", "ab" * 20]
    with pytest.raises(SystemExit) as caught:
        main(["run", str(DEFAULT_RECIPE), *out, *both])
    assert caught.value.code == 2
    lonely = ["--signing-passphrase-file", str(openpgp_keys.plain_secret)]
    assert main(["run", str(DEFAULT_RECIPE), *out, *lonely]) == 2
    assert main(["run", str(DEFAULT_RECIPE), *out, "--signing-key-id=--homedir=/tmp"]) == 2
    capsys.readouterr()


def test_a_passphrase_file_is_read_and_the_passphrase_is_never_shown(
    setup,
    openpgp_keys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through a whole signed run (json logs), the records it writes and the cache, and every
    gpg command line: the passphrase is nowhere; gpg gets it on a pipe."""
    from builder import log
    from builder.commands.signing import signer_for

    secret = openpgp_keys.passphrase
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(secret + "\n")
    passphrase_file.chmod(0o600)
    argv_seen: list[list[str]] = []
    real_run = subprocess.run

    def recording(argv, *args, **kwargs):
        argv_seen.append([str(word) for word in argv])
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(host_openpgp.subprocess, "run", recording)
    before = set(Path(host_openpgp.tempfile.gettempdir()).glob("qga-gnupg-*"))
    monkeypatch.setenv("QGA_SIGNING_PASSPHRASE", "not this one")  # the file wins
    plan, text, engine, cache = setup
    log.configure("json")
    args = type("Args", (), {})()
    args.signing_key, args.signing_key_id = openpgp_keys.signer_secret, None
    args.signing_passphrase_file = passphrase_file
    with signer_for(args) as signer:
        result = pipeline.run(plan, engine, cache, text, signer=signer)
    written = [p.read_bytes() for p in result.output_dir.rglob("*") if p.is_file()]
    written += [p.read_bytes() for p in cache.root.rglob("*") if p.is_file()]
    written.append(capsys.readouterr().err.encode())
    assert any(b"signing key checked" in blob for blob in written)
    for blob in written:
        assert secret.encode() not in blob
    assert argv_seen and all(secret not in " ".join(argv) for argv in argv_seen)
    assert any("--passphrase-fd" in argv for argv in argv_seen)
    assert set(Path(host_openpgp.tempfile.gettempdir()).glob("qga-gnupg-*")) == before


def test_the_private_home_is_removed_after_a_failure_and_an_interrupt(
    openpgp_keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder.errors import Interrupted

    homes: list[Path] = []
    real = host_openpgp.PrivateHome.__init__

    def remember(self) -> None:
        real(self)
        homes.append(self.path)

    monkeypatch.setattr(host_openpgp.PrivateHome, "__init__", remember)
    with pytest.raises(SigningKeyError):
        check_key(request(openpgp_keys, passphrase="wrong"))
    plain = request(openpgp_keys, key_file=openpgp_keys.plain_secret)
    with pytest.raises(Interrupted), open_signer(plain):
        assert homes[-1].is_dir() and oct(homes[-1].stat().st_mode)[-3:] == "700"
        raise Interrupted(2)
    assert len(homes) == 2 and not any(home.exists() for home in homes)


def test_vm_test_leaves_a_signed_manifest_as_it_is(tmp_path: Path) -> None:
    from builder.commands.vm_test import _record

    (tmp_path / "manifest.json").write_text('{"schema": "x"}\n')
    (tmp_path / "SHA256SUMS.asc").write_text("signature\n")
    _record(tmp_path / "manifest.json", {"passed": True})
    assert (tmp_path / "manifest.json").read_text() == '{"schema": "x"}\n'


def test_a_signing_subkey_signs_for_its_primary_even_a_stubbed_one(tmp_path: Path) -> None:
    """A certify-only primary key with a signing subkey, exported whole or with the primary's
    secret left out (gpg --export-secret-subkeys: a stub): the subkey signs, and the signature
    names the primary key's fingerprint, the one recorded and checked."""
    from tests.openpgp_keys import Keyring

    keyring = Keyring(tmp_path / "home")
    try:
        keyring.gpg("--quick-gen-key", "Offline <offline@example.org>", "ed25519", "cert", "never")
        primary = keyring.fingerprint("offline@example.org")
        keyring.gpg("--quick-add-key", primary, "ed25519", "sign", "never")
        whole = keyring.export_secret(primary, tmp_path / "whole.asc")
        stub = tmp_path / "stub.asc"
        stub.write_text(keyring.gpg("--armor", "--export-secret-subkeys", primary).stdout)
        public = keyring.export_public(primary, tmp_path / "offline.pub")
    finally:
        keyring.close()
    for key in (whole, stub):
        with open_signer(SigningRequest(key_file=key)) as signer:
            assert signer.fingerprint == primary
            directory = tmp_path / key.stem
            directory.mkdir()
            (directory / "agent").write_bytes(b"\x7fELF")
            (directory / "SHA256SUMS").write_text(
                format_sha256sums(digest_tree(directory, ["agent"]))
            )
            signer.sign_file(directory / "SHA256SUMS", directory / "SHA256SUMS.asc")
        check_as_a_user(directory, public, tmp_path / f"{key.stem}-home")


def test_a_matrix_hands_each_build_the_key_never_the_passphrase(
    openpgp_keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder.arguments import build_parser
    from builder.commands.matrix import child_arguments

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pass").write_text(openpgp_keys.passphrase)
    argv = ["run", "a.yaml", "b.yaml", "--signing-key", "key.asc"]
    args = build_parser().parse_args([*argv, "--signing-passphrase-file", "pass"])
    passed = child_arguments(args)
    assert passed == [
        *("--signing-key", str(tmp_path / "key.asc")),
        *("--signing-passphrase-file", str(tmp_path / "pass")),
    ]
    assert openpgp_keys.passphrase not in " ".join(passed)


def test_a_signature_that_fails_at_the_end_costs_no_build(setup, openpgp_keys) -> None:
    """A key ID whose passphrase the user's agent no longer caches when a long build ends:
    nothing is published, but the checked build is in the artifact cache, so the rerun (the
    key unlocked again) is served from it and signed, with no container."""
    plan, text, engine, cache = setup

    class ExpiredAgent:
        fingerprint = openpgp_keys.plain

        def record(self) -> dict[str, str]:
            return {"openpgp_fingerprint": self.fingerprint}

        def sign_file(self, path: Path, signature: Path) -> None:
            raise SigningKeyError("gpg could not sign: the agent asks for the passphrase again")

    with pytest.raises(SigningKeyError):
        pipeline.run(plan, engine, cache, text, signer=ExpiredAgent())  # type: ignore[arg-type]
    assert not plan.output_dir.exists()
    rerun = FakeEngine()
    rerun.run_id = "fakerun00005"
    with open_signer(request(openpgp_keys, key_file=openpgp_keys.plain_secret)) as signer:
        result = pipeline.run(plan, rerun, cache, text, signer=signer)
    assert rerun.created == [] and result.manifest["cache"]["hit"] is True
    assert (result.output_dir / "SHA256SUMS.asc").is_file()


def test_the_passphrase_leaves_the_environment_once_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing the tool starts after reading it (docker, ssh, gpg) inherits it; a matrix hands
    it to its builds on purpose, and gpg never gets it even if it came back."""
    import os

    from builder.commands.signing import signing_request
    from builder.config.settings import PASSPHRASE_ENV, child_environment
    from builder.formats import redact

    monkeypatch.setenv(PASSPHRASE_ENV, "wrong horse")
    args = argparse.Namespace(
        signing_key=Path("key.asc"), signing_key_id=None, signing_passphrase_file=None
    )
    request = signing_request(args)
    assert request is not None and request.passphrase == b"wrong horse"
    assert PASSPHRASE_ENV not in os.environ
    # Not masked in logs either: masking would show which words it contains.
    assert redact.text("the wrong key") == "the wrong key"
    monkeypatch.setenv(PASSPHRASE_ENV, "back again")
    assert PASSPHRASE_ENV not in child_environment()
    assert child_environment({PASSPHRASE_ENV: "for a build"})[PASSPHRASE_ENV] == "for a build"


def test_a_matrix_gives_its_builds_the_passphrase_it_took(
    monkeypatch: pytest.MonkeyPatch, openpgp_keys
) -> None:
    from builder.commands.signing import check_signing_key
    from builder.config.settings import PASSPHRASE_ENV

    monkeypatch.setenv(PASSPHRASE_ENV, openpgp_keys.passphrase)
    args = argparse.Namespace(
        signing_key=openpgp_keys.signer_secret, signing_key_id=None, signing_passphrase_file=None
    )
    assert check_signing_key(args) == {PASSPHRASE_ENV: openpgp_keys.passphrase}
    unprotected = argparse.Namespace(
        signing_key=openpgp_keys.plain_secret, signing_key_id=None, signing_passphrase_file=None
    )
    assert check_signing_key(unprotected) == {}
