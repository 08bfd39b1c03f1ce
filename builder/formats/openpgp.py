"""OpenPGP as far as signing needs it, without running gpg: the version of the keys in a key
file (armored or binary), gpg's `--with-colons` key listings and `--status-fd` lines.

Only version 4 keys are taken. GnuPG (2.2 and 2.4, what Debian and Ubuntu ship) cannot read
RFC 9580's version 6 keys, nor verify their signatures; version 5 keys (LibrePGP) are read by
GnuPG alone. A release signed with either could not be checked by the `gpg --verify` its users
run, so such a key is refused before anything is built.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, replace

SUPPORTED_VERSION = 4
V4_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")
_KEY_TAGS = {5: "secret key", 6: "public key"}  # primary key packets (not subkeys)
_ARMOR_BEGIN = re.compile(rb"^-----BEGIN PGP (?:PUBLIC|PRIVATE) KEY BLOCK-----\s*$")
_ARMOR_END = re.compile(rb"^-----END PGP (?:PUBLIC|PRIVATE) KEY BLOCK-----\s*$")
MAX_PACKETS = 10_000


class KeyFormatError(ValueError):
    """The bytes are not an OpenPGP key as far as this reader can tell."""


def dearmor(data: bytes) -> bytes:
    """The binary packets of a key file: every ASCII-armored key block decoded and joined, or
    the bytes as they are when the file is binary (gpg --export without --armor)."""
    if b"-----BEGIN PGP " not in data[:65536]:  # gpg skips text before the armor too
        return data
    blocks: list[bytes] = []
    body: list[bytes] | None = None
    in_headers = False
    for line in data.splitlines():
        line = line.strip()
        if body is None:
            if _ARMOR_BEGIN.match(line):
                body, in_headers = [], True
            continue
        if _ARMOR_END.match(line):
            blocks.append(_decode(body))
            body = None
        elif in_headers and (b": " in line or not line):
            in_headers = bool(line)  # headers end at the first empty line
        else:
            in_headers = False
            if line and not (line.startswith(b"=") and len(line) == 5):  # the CRC-24 line
                body.append(line)
    if not blocks:
        raise KeyFormatError("no complete armored key block")
    return b"".join(blocks)


def _decode(lines: list[bytes]) -> bytes:
    try:
        return base64.b64decode(b"".join(lines), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError("its armor is not base64") from None


def primary_key_versions(data: bytes) -> list[tuple[str, int]]:
    """(kind, version) of each primary key packet: ("secret key", 4), ("public key", 6)..."""
    packets = dearmor(data)
    found: list[tuple[str, int]] = []
    offset = 0
    for _ in range(MAX_PACKETS):
        if offset >= len(packets):
            return found
        tag, body_start, body_end = _packet(packets, offset)
        if tag in _KEY_TAGS:
            if body_start >= len(packets):
                raise KeyFormatError("a key packet is empty")
            found.append((_KEY_TAGS[tag], packets[body_start]))
        offset = body_end
    raise KeyFormatError(f"more than {MAX_PACKETS} packets")


def _packet(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of body, end of body) of the packet at offset."""
    first = data[offset]
    if not first & 0x80:
        raise KeyFormatError("not OpenPGP packets")
    if first & 0x40:  # new format: tag in 6 bits, then a length of 1, 2 or 5 octets
        tag, position = first & 0x3F, offset + 1
        end = position
        while True:  # partial body lengths (never in key packets, but legal) add up
            length, position, partial = _new_length(data, position)
            end = position + length
            if not partial:
                break
            position = end
        return tag, offset + 1 + _length_octets(data, offset + 1), end
    tag, length_type = (first >> 2) & 0x0F, first & 0x03
    if length_type == 3:  # indeterminate: to the end
        return tag, offset + 1, len(data)
    size = (1, 2, 4)[length_type]
    start = offset + 1 + size
    if start > len(data):
        raise KeyFormatError("a packet header is cut off")
    return tag, start, start + int.from_bytes(data[offset + 1 : start], "big")


def _length_octets(data: bytes, position: int) -> int:
    first = data[position] if position < len(data) else 0
    return 1 if first < 192 else 2 if first < 224 else 5 if first == 255 else 1


def _new_length(data: bytes, position: int) -> tuple[int, int, bool]:
    """(length, position after it, partial) of a new-format length."""
    if position >= len(data):
        raise KeyFormatError("a packet header is cut off")
    first = data[position]
    if first < 192:
        return first, position + 1, False
    if first < 224:
        if position + 1 >= len(data):
            raise KeyFormatError("a packet header is cut off")
        return ((first - 192) << 8) + data[position + 1] + 192, position + 2, False
    if first == 255:
        if position + 5 > len(data):
            raise KeyFormatError("a packet header is cut off")
        return int.from_bytes(data[position + 1 : position + 5], "big"), position + 5, False
    return 1 << (first & 0x1F), position + 1, True


# --- gpg --with-colons ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPart:
    """One `sec`/`ssb` (or `pub`/`sub`) record and the `fpr` record after it."""

    kind: str
    validity: str  # e: expired, r: revoked, d: disabled, i: invalid; others: usable
    capabilities: str  # lower case: this (sub)key's own; upper case: the key's, usable
    secret: str  # in a secret listing: "+" present, "#" a stub (no secret part here)
    fingerprint: str = ""


@dataclass(frozen=True)
class ListedKey:
    primary: KeyPart
    subkeys: tuple[KeyPart, ...]
    user_ids: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        return self.primary.fingerprint


def parse_colons(text: str) -> list[ListedKey]:
    """The keys of a `gpg --with-colons --fixed-list-mode --list-(secret-)keys` listing."""
    keys: list[ListedKey] = []
    primary: KeyPart | None = None
    subkeys: list[KeyPart] = []
    user_ids: list[str] = []
    last: str = ""

    def close() -> None:
        if primary is not None:
            keys.append(ListedKey(primary, tuple(subkeys), tuple(user_ids)))

    for line in text.splitlines():
        fields = line.split(":")
        kind = fields[0]
        if kind in ("sec", "pub", "ssb", "sub"):
            part = KeyPart(kind, _field(fields, 1), _field(fields, 11), _field(fields, 14))
            if kind in ("sec", "pub"):
                close()
                primary, subkeys, user_ids = part, [], []
            elif primary is not None:
                subkeys.append(part)
            last = kind
        elif kind == "fpr" and primary is not None and last:
            fingerprint = _field(fields, 9).upper()
            if last in ("sec", "pub"):
                primary = replace(primary, fingerprint=fingerprint)
            elif subkeys:
                subkeys[-1] = replace(subkeys[-1], fingerprint=fingerprint)
            last = ""
        elif kind == "uid" and primary is not None:
            user_ids.append(_field(fields, 9))
    close()
    return keys


def _field(fields: list[str], index: int) -> str:
    return fields[index] if index < len(fields) else ""


def _usable(part: KeyPart) -> bool:
    return part.validity not in ("e", "r", "d", "i") and part.secret not in ("#", "")


def signing_problem(key: ListedKey) -> str | None:
    """None when the listed secret key has a (sub)key that can sign here; else why not."""
    if not V4_FINGERPRINT.match(key.fingerprint):
        return (
            f"it is not a version {SUPPORTED_VERSION} key (its fingerprint has "
            f"{len(key.fingerprint)} digits; a v5 or v6 key's signatures cannot be checked by "
            "the gpg most systems ship)"
        )
    if key.primary.validity == "r":
        return "it has been revoked"
    if key.primary.validity == "e":
        return "it has expired"
    if key.primary.validity in ("d", "i"):
        return "gpg says it is disabled or invalid"
    signers = [part for part in (key.primary, *key.subkeys) if "s" in part.capabilities]
    if not signers:
        return "it has no (sub)key that can sign (its capabilities say so)"
    if not any(_usable(part) for part in signers):
        if all(part.secret == "#" for part in signers):
            return (
                "the secret part of its signing (sub)key is not there (a stub; was it exported "
                "with --export-secret-subkeys of another subkey?)"
            )
        return "every (sub)key of it that can sign has expired or been revoked"
    return None


# --- gpg --status-fd -----------------------------------------------------------------------


def status_records(text: str) -> list[list[str]]:
    """`[GNUPG:] KEYWORD ARGS...` lines as [KEYWORD, ARGS...]; other lines are left out."""
    return [
        line.split()[1:]
        for line in text.splitlines()
        if line.startswith("[GNUPG:] ") and len(line.split()) > 1
    ]


def keywords(records: list[list[str]]) -> set[str]:
    return {record[0] for record in records}


# libgpg-error codes gpg puts in FAILURE lines (the low 16 bits; the high ones name the
# component that failed).
ERROR_WORDS = {
    9: "no public key",
    11: "bad passphrase",
    17: "no secret key",
    53: "unusable public key",
    54: "unusable secret key",
    58: "no data",
    62: "timeout",
    85: "no pinentry",
    94: "certificate revoked",
    99: "operation cancelled",
    153: "key expired",
    177: "no passphrase given",
}
BAD_PASSPHRASE, NO_PASSPHRASE, NO_PINENTRY, CANCELED = 11, 177, 85, 99


def failure_codes(records: list[list[str]]) -> list[int]:
    """The error codes of `FAILURE what code` and `ERROR what code` lines."""
    codes = []
    for record in records:
        if record[0] in ("FAILURE", "ERROR") and len(record) >= 3 and record[2].isdigit():
            codes.append(int(record[2]) & 0xFFFF)
    return codes


def validsig_primary(records: list[list[str]]) -> str | None:
    """The primary key's fingerprint of a VALIDSIG line (its last field, or the signing key's
    own when gpg gives no primary), upper case; None without VALIDSIG."""
    for record in records:
        if record[0] == "VALIDSIG" and len(record) >= 2:
            return (record[10] if len(record) >= 11 else record[1]).upper()
    return None
