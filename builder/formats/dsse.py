"""DSSE envelopes (Dead Simple Signing Envelope, the in-toto attestation layer): the signed form
of a provenance statement, as SLSA generators publish it (`*.intoto.jsonl`, one envelope per
line) and as `cosign verify-blob-attestation` checks it.

A signature covers PAE(payloadType, payload) = "DSSEv1 <len> <type> <len> <payload>", never the
JSON of the envelope, so the envelope's layout is free and the payload's bytes are what count.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
MAX_ENVELOPE_BYTES = 16 << 20  # a statement lists a few artifacts: far below this
MAX_SIGNATURES = 16


class EnvelopeError(ValueError):
    """An envelope that does not read: said in words, without its bytes."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """The Pre-Authentication Encoding, what a DSSE signature is made over."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def signed_bytes(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def line(self) -> bytes:
        """The envelope as one JSON Lines line (ASCII, so no character reads as a break)."""
        data = {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }
        return json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"

    def statement(self) -> dict[str, Any]:
        """The in-toto statement the envelope carries (checked to be a JSON object)."""
        if self.payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise EnvelopeError(f"its payloadType is {self.payload_type!r}, not in-toto's")
        try:
            statement = json.loads(self.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise EnvelopeError("its payload is not JSON") from None
        if not isinstance(statement, dict):
            raise EnvelopeError("its payload is not a JSON object")
        return statement


def parse_lines(data: bytes) -> list[Envelope]:
    """Every envelope of a JSON Lines file (blank lines skipped)."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"it is larger than {MAX_ENVELOPE_BYTES} bytes")
    envelopes = [
        parse_envelope(line, f"line {number}")
        for number, line in enumerate(data.split(b"\n"), 1)
        if line.strip()
    ]
    if not envelopes:
        raise EnvelopeError("it holds no envelope")
    return envelopes


def parse_envelope(data: bytes, where: str = "the envelope") -> Envelope:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise EnvelopeError(f"{where} is not JSON") from None
    if not isinstance(raw, dict):
        raise EnvelopeError(f"{where} is not a JSON object")
    payload_type, payload, signatures = (
        raw.get("payloadType"),
        raw.get("payload"),
        raw.get("signatures"),
    )
    if not isinstance(payload_type, str) or not isinstance(payload, str):
        raise EnvelopeError(f"{where} has no payloadType or payload string")
    if not isinstance(signatures, list) or not 1 <= len(signatures) <= MAX_SIGNATURES:
        raise EnvelopeError(f"{where} has no signatures list of 1 to {MAX_SIGNATURES}")
    parsed = []
    for entry in signatures:
        if not isinstance(entry, dict) or not isinstance(entry.get("sig"), str):
            raise EnvelopeError(f"{where}: a signature has no sig string")
        keyid = entry.get("keyid", "")
        parsed.append(Signature(keyid if isinstance(keyid, str) else "", _b64(entry["sig"], where)))
    return Envelope(payload_type, _b64(payload, where), tuple(parsed))


def _b64(text: str, where: str) -> bytes:
    """Standard or URL-safe base64, padded or not (DSSE allows either)."""
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{where}: a field is not base64") from None
