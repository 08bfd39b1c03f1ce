"""Signed provenance (`--attestation-key`): the run's in-toto statement in a DSSE envelope,
provenance.intoto.jsonl, checked by `verify --cosign-key` (no engine) with each way it can be
wrong; keys this tool refuses before anything is built. The same envelopes are checked by the
real `cosign verify-blob-attestation` in tests/integration/test_signing.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from builder import pipeline
from builder.cli import main
from builder.errors import SigningKeyError
from builder.formats.checksums import format_sha256sums, parse_sha256sums, sha256_file
from builder.formats.dsse import IN_TOTO_PAYLOAD_TYPE, pae, parse_lines
from builder.host.attestation_keys import load_public_key, load_signer, verify_envelope
from builder.host.openpgp import open_signer
from builder.outputs import output_dir
from tests.cosign import write_key
from tests.fakes import FakeEngine
from tests.unit import test_pipeline
from tests.unit.test_signing import request

setup = test_pipeline.setup


@pytest.fixture(params=["ed25519", "ecdsa-p256"])
def keypair(request, tmp_path: Path) -> tuple[Path, Path]:
    key = (
        ed25519.Ed25519PrivateKey.generate()
        if request.param == "ed25519"
        else (ec.generate_private_key(ec.SECP256R1()))
    )
    return write_key(tmp_path, request.param, key)


def test_pae_is_the_dsse_encoding() -> None:
    assert pae("t", b"ab") == b"DSSEv1 1 t 2 ab"


def test_an_attested_run_carries_its_statement_signed(setup, keypair) -> None:
    plan, text, engine, cache = setup
    private, public = keypair
    result = pipeline.run(plan, engine, cache, text, attester=load_signer(private, None))
    out = result.output_dir
    lines = (out / "provenance.intoto.jsonl").read_bytes()
    assert lines.count(b"\n") == 1 and lines.isascii()
    (envelope,) = parse_lines(lines)
    assert envelope.payload_type == IN_TOTO_PAYLOAD_TYPE
    assert envelope.payload == (out / "provenance.intoto.json").read_bytes()
    verify_envelope(envelope, load_public_key(public), "the envelope")
    assert set(result.manifest["signing"]) == {"dsse_algorithm", "dsse_public_key_sha256"}
    assert output_dir.why_not_ours(out) is None
    assert main(["verify", "--cosign-key", str(public), str(out)]) == 0
    # Unsigned SHA256SUMS: the artifacts only, as an unattested run's.
    assert sorted(parse_sha256sums((out / "SHA256SUMS").read_text())) == sorted(
        a["name"] for a in result.manifest["artifacts"]
    )


def test_signed_and_attested_the_envelope_is_listed_and_both_check(
    setup, openpgp_keys, keypair
) -> None:
    plan, text, engine, cache = setup
    private, public = keypair
    with open_signer(request(openpgp_keys, key_file=openpgp_keys.plain_secret)) as signer:
        result = pipeline.run(
            plan, engine, cache, text, signer=signer, attester=load_signer(private, None)
        )
    out = result.output_dir
    assert "provenance.intoto.jsonl" in parse_sha256sums((out / "SHA256SUMS").read_text())
    assert (
        main(
            [
                "verify",
                "--public-key",
                str(openpgp_keys.plain_public),
                "--cosign-key",
                str(public),
                str(out),
            ]
        )
        == 0
    )
    # Served from the cache: the entry holds no envelope; this run signs its own.
    served = FakeEngine()
    served.run_id = "fakerun00009"
    again = pipeline.run(plan, served, cache, text, attester=load_signer(private, None))
    assert served.created == [] and again.manifest["cache"]["hit"] is True
    assert main(["verify", "--cosign-key", str(public), str(again.output_dir)]) == 0


@pytest.fixture
def attested(setup, tmp_path: Path) -> tuple[Path, Path]:
    plan, text, engine, cache = setup
    private, public = write_key(tmp_path, "ours", ed25519.Ed25519PrivateKey.generate())
    result = pipeline.run(plan, engine, cache, text, attester=load_signer(private, None))
    return result.output_dir, public


def _code(out: Path, public: Path, capsys) -> tuple[int, str]:
    code = main(["verify", "--cosign-key", str(public), str(out)])
    return code, capsys.readouterr().err


def test_an_envelope_by_another_key_is_17(attested, tmp_path: Path, capsys) -> None:
    out, _ = attested
    _, other = write_key(tmp_path, "other", ed25519.Ed25519PrivateKey.generate())
    code, err = _code(out, other, capsys)
    assert code == 17 and "no signature in it is good" in err, err


def test_a_changed_statement_is_17(attested, capsys) -> None:
    out, public = attested
    path = out / "provenance.intoto.jsonl"
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["name"] = "something-else"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(envelope) + "\n")
    assert _code(out, public, capsys)[0] == 17


def test_a_changed_artifact_is_18_and_a_missing_one_19(attested, capsys) -> None:
    """Whoever changes an artifact and rewrites the unsigned SHA256SUMS to match is caught by
    the signed provenance."""
    out, public = attested
    agent = out / "qemu-ga-patched-static"
    agent.write_bytes(agent.read_bytes() + b"x")
    sums = parse_sha256sums((out / "SHA256SUMS").read_text())
    (out / "SHA256SUMS").write_text(format_sha256sums(sums | {agent.name: sha256_file(agent)}))
    code, err = _code(out, public, capsys)
    assert code == 18 and "qemu-ga-patched-static is not the file the signed provenance" in err
    agent.unlink()
    del sums[agent.name]
    (out / "SHA256SUMS").write_text(format_sha256sums(sums))
    code, err = _code(out, public, capsys)
    assert code == 19, err


def test_no_envelope_is_16(attested, capsys) -> None:
    out, public = attested
    (out / "provenance.intoto.jsonl").unlink()
    code, err = _code(out, public, capsys)
    assert code == 16 and "provenance.intoto.jsonl is missing" in err, err


def test_an_envelope_that_is_not_json_is_17(attested, capsys) -> None:
    out, public = attested
    (out / "provenance.intoto.jsonl").write_bytes(b"\xff not json\n")
    assert _code(out, public, capsys)[0] == 17


@pytest.mark.parametrize(
    "make,password,given,words",
    [
        (lambda: rsa.generate_private_key(65537, 2048), None, None, "ECDSA P-256 or Ed25519"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), None, None, "ECDSA P-256 or Ed25519"),
        (ed25519.Ed25519PrivateKey.generate, b"pw", None, "no passphrase was given"),
        (ed25519.Ed25519PrivateKey.generate, b"pw", b"wrong", "passphrase is wrong"),
    ],
    ids=["rsa", "p384", "encrypted-no-passphrase", "wrong-passphrase"],
)
def test_keys_that_cannot_attest_are_refused(tmp_path: Path, make, password, given, words) -> None:
    private, _ = write_key(tmp_path, "k", make(), password)
    with pytest.raises(SigningKeyError) as caught:
        load_signer(private, given)
    assert words in caught.value.message and caught.value.exit_code == 15


def test_an_encrypted_key_with_its_passphrase_signs(tmp_path: Path) -> None:
    private, public = write_key(tmp_path, "k", ec.generate_private_key(ec.SECP256R1()), b"pw")
    signer = load_signer(private, b"pw")
    verify_envelope(signer.sign(b"{}"), load_public_key(public), "trial")


def test_run_refuses_an_unusable_attestation_key_before_docker(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from tests.helpers import DEFAULT_RECIPE

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    private, public = write_key(tmp_path, "rsa", rsa.generate_private_key(65537, 2048))
    code = main(
        [
            "run",
            str(DEFAULT_RECIPE),
            "--attestation-key",
            str(private),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 15 and "Docker" not in err and not (tmp_path / "out").exists(), err
    # A public key given where the private one goes: the same refusal, one line.
    assert main(["run", str(DEFAULT_RECIPE), "--attestation-key", str(public)]) == 15


def test_a_release_signs_each_recipes_statement(tmp_path: Path, capsys) -> None:
    """The release's provenance.intoto.jsonl: one envelope per recipe, each signed by the
    release's key and naming that recipe's artifacts, all in the release directory."""
    from tests.unit.test_release import make_output

    private, public = write_key(tmp_path, "rel", ec.generate_private_key(ec.SECP256R1()))
    out = tmp_path / "out"
    inputs = [
        make_output(out / "a", "linux-a", {"qemu-ga-a": b"\x7fELF a"}),
        make_output(out / "b", "linux-b", {"qemu-ga-b": b"\x7fELF b"}),
    ]
    target = tmp_path / "release"
    args = ["release", *map(str, inputs), "--output", str(target)]
    assert main([*args, "--attestation-key", str(private)]) == 0, capsys.readouterr().err
    envelopes = parse_lines((target / "provenance.intoto.jsonl").read_bytes())
    names = [[s["name"] for s in e.statement()["subject"]] for e in envelopes]
    assert names == [["qemu-ga-a"], ["qemu-ga-b"]]
    assert set(json.loads((target / "release.json").read_text())["signing"]) == {
        "dsse_algorithm",
        "dsse_public_key_sha256",
    }
    assert output_dir.why_not_ours(target) is None
    assert main(["verify", "--cosign-key", str(public), str(target)]) == 0
    # Without the key, the bundle is the statements themselves, as before.
    capsys.readouterr()
    assert main(args) == 0
    assert main(["verify", "--cosign-key", str(public), str(target)]) == 17
