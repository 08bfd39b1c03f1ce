"""The keys of signed provenance: an ECDSA P-256 or Ed25519 key in PEM, as `openssl genpkey`
makes it (PKCS#8, encrypted or not) and as `cosign verify-blob-attestation --key` takes its
public half. Signing and checking happen here, on the host, with `cryptography`; the key never
enters a container, a log, a record or an error message (only its public digest does).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from builder.errors import SignatureError, SigningKeyError, UsageError
from builder.formats.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature

MAX_KEY_BYTES = 64 << 10
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def _read_small(path: Path, what: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise UsageError(f"{what} {path} is not a regular file")
        data = handle.read(MAX_KEY_BYTES + 1)
    if len(data) > MAX_KEY_BYTES:
        raise UsageError(f"{what} {path} is larger than a key file ({MAX_KEY_BYTES} bytes)")
    return data


def _algorithm(key: PrivateKey | PublicKey) -> str | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ecdsa-p256-sha256" if isinstance(key.curve, ec.SECP256R1) else None
    return None


def key_digest(public: PublicKey) -> str:
    """sha256 of the public key's SubjectPublicKeyInfo (DER): what records name it by."""
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class AttestationSigner:
    key: PrivateKey
    algorithm: str
    digest: str  # of the public key

    def sign(self, payload: bytes) -> Envelope:
        """An in-toto statement's bytes in a DSSE envelope with this key's signature."""
        unsigned = Envelope(IN_TOTO_PAYLOAD_TYPE, payload, ())
        message = unsigned.signed_bytes()
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            sig = self.key.sign(message)
        else:
            sig = self.key.sign(message, ec.ECDSA(hashes.SHA256()))
        # keyid left empty, as SLSA's generators do: a verifier is told the key, not a name.
        return Envelope(IN_TOTO_PAYLOAD_TYPE, payload, (Signature("", sig),))

    def record(self) -> dict[str, str]:
        return {"dsse_algorithm": self.algorithm, "dsse_public_key_sha256": self.digest}


def load_signer(path: Path, passphrase: bytes | None) -> AttestationSigner:
    """The private key of `--attestation-key FILE`, checked by a trial signature it must
    verify (SigningKeyError, exit 15, before anything is built)."""
    data = _read_small(path, "--attestation-key")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError:  # encrypted and no passphrase, or a passphrase for a plain key
        raise SigningKeyError(
            f"--attestation-key {path}: "
            + (
                "it is encrypted and no passphrase was given"
                if not passphrase
                else "it is not encrypted, yet a passphrase was given"
            ),
            hint="set QGA_ATTESTATION_PASSPHRASE to its passphrase (or unset it)",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(
            f"--attestation-key {path}: not a PEM private key this tool can read, or the "
            "passphrase is wrong",
            hint="an ECDSA P-256 or Ed25519 key: `openssl genpkey -algorithm ed25519 -out "
            "KEY.pem`, its public half `openssl pkey -in KEY.pem -pubout -out KEY.pub`",
        ) from None
    algorithm = _algorithm(key)  # type: ignore[arg-type]
    if algorithm is None:
        raise SigningKeyError(
            f"--attestation-key {path}: a {type(key).__name__.removesuffix('PrivateKey')} key;"
            " provenance is signed with ECDSA P-256 or Ed25519 only"
        )
    signer = AttestationSigner(key, algorithm, key_digest(key.public_key()))  # type: ignore[arg-type]
    trial = signer.sign(b"{}")
    verify_envelope(trial, key.public_key(), "the trial signature")  # type: ignore[arg-type]
    return signer


def load_public_key(path: Path, option: str = "--cosign-key") -> PublicKey:
    data = _read_small(path, option)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(
            f"{option} {path}: not a PEM public key",
            hint="the public half of the attestation key (`openssl pkey -in KEY.pem -pubout`)",
        ) from None
    if _algorithm(key) is None:  # type: ignore[arg-type]
        raise UsageError(f"{option} {path}: not an ECDSA P-256 or Ed25519 public key")
    return key  # type: ignore[return-value]


def verify_envelope(envelope: Envelope, key: PublicKey, where: str) -> None:
    """One of the envelope's signatures is `key`'s over its PAE (SignatureError, exit 17)."""
    message = envelope.signed_bytes()
    for signature in envelope.signatures:
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature.sig, message)
            else:
                key.verify(signature.sig, message, ec.ECDSA(hashes.SHA256()))
            return
        except InvalidSignature:
            continue
    raise SignatureError(f"{where}: no signature in it is good for the key given")
