"""`verify --cosign-key KEY DIR`: the directory's signed provenance (provenance.intoto.jsonl,
DSSE envelopes: one for a run, one per recipe for a release) checked offline, as
`cosign verify-blob-attestation --key KEY --insecure-ignore-tlog` checks it: every envelope
signed by KEY, and every subject its statement names present in DIR with that sha256."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from builder.errors import (
    InputError,
    MissingFileError,
    SignatureError,
    SignatureMissingError,
    TamperedFileError,
)
from builder.formats.dsse import MAX_ENVELOPE_BYTES, EnvelopeError, parse_lines
from builder.formats.release import PROVENANCE_BUNDLE
from builder.host.attestation_keys import PublicKey, key_digest, verify_envelope
from builder.outputs.signed_dir import hash_beneath, open_directory, read_beneath

ATTESTATION_NAME = PROVENANCE_BUNDLE  # provenance.intoto.jsonl, the layout SLSA publishes


@dataclass(frozen=True)
class Attested:
    envelopes: int
    subjects: int
    key_sha256: str


def check_attestations(directory: Path, key: PublicKey) -> Attested:
    label = str(directory)
    root = open_directory(directory, label)
    try:
        data = read_beneath(root, ATTESTATION_NAME, MAX_ENVELOPE_BYTES)
        if data is None:
            raise SignatureMissingError(
                f"{label}: {ATTESTATION_NAME} is missing (--cosign-key was given)",
                hint="the directory was published without signed provenance "
                "(run or release with --attestation-key)",
            )
        try:
            envelopes = parse_lines(data)
        except EnvelopeError as exc:
            raise SignatureError(f"{label}: {ATTESTATION_NAME}: {exc}") from None
        subjects = 0
        for number, envelope in enumerate(envelopes, 1):
            where = f"{label}: {ATTESTATION_NAME} line {number}"
            verify_envelope(envelope, key, where)
            try:
                statement = envelope.statement()
            except EnvelopeError as exc:
                raise SignatureError(f"{where}: {exc}") from None
            subjects += _check_subjects(root, statement.get("subject"), where)
    finally:
        os.close(root)
    return Attested(len(envelopes), subjects, key_digest(key))


def _check_subjects(root: int, subjects: object, where: str) -> int:
    if not isinstance(subjects, list) or not subjects:
        raise SignatureError(f"{where}: its statement names no subject")
    for subject in subjects:
        name = subject.get("name") if isinstance(subject, dict) else None
        digest = subject.get("digest", {}).get("sha256") if isinstance(subject, dict) else None
        if not isinstance(name, str) or not isinstance(digest, str) or "/" in name:
            raise SignatureError(f"{where}: a subject has no plain file name and sha256")
        try:
            found = hash_beneath(root, name)
        except ValueError as exc:
            raise TamperedFileError(f"{where}: subject {exc}") from None
        except InputError as exc:
            raise TamperedFileError(f"{where}: subject {name}: {exc.message}") from None
        if found is None:
            raise MissingFileError(f"{where}: subject {name} is not in the directory")
        if found != digest:
            raise TamperedFileError(
                f"{where}: {name} is not the file the signed provenance names "
                f"(sha256 {found}, signed {digest})"
            )
    return len(subjects)
