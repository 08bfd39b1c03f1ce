"""sha256 of files and streams, and the SHA256SUMS format that `sha256sum -c` reads."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from builder.errors import InputError

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(value: Any) -> str:
    """Digest of a JSON-able value, independent of dict order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_bytes(text.encode())


def format_sha256sums(digests: Mapping[str, str]) -> str:
    """Lines `<hex>  <name>` sorted by name: the text mode format of GNU sha256sum."""
    lines = []
    for name in sorted(digests):
        if "\n" in name or "\\" in name:
            raise ValueError(f"file name {name!r} cannot be written to SHA256SUMS")
        lines.append(f"{digests[name]}  {name}\n")
    return "".join(lines)


def parse_sha256sums(text: str) -> dict[str, str]:
    """Parse `sha256sum` output (text or binary mode). Raises ValueError on a malformed line."""
    result: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, name = line.partition(" ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise ValueError(f"line {number}: not `<sha256>  <name>`")
        name = name[1:] if name[:1] in (" ", "*") else name
        if not name:
            raise ValueError(f"line {number}: no file name")
        result[name] = digest.lower()
    return result


def digest_tree(root: Path, names: Iterable[str]) -> dict[str, str]:
    return {name: sha256_file(root / name) for name in names}


def verify_bytes(data: bytes, expected: str, what: str, name: object) -> str:
    """The digest of these very bytes, or an error naming `what` (a recipe field) and file."""
    return _pinned(sha256_bytes(data), expected, what, name)


def verify_digest(path: Path, expected: str, what: str) -> str:
    return _pinned(sha256_file(path), expected, what, path)


def _pinned(actual: str, expected: str, what: str, name: object) -> str:
    if actual != expected:
        raise InputError(
            f"{what}: sha256 mismatch for {name}\n  expected {expected}\n  actual   {actual}",
            hint="the file is not the one the recipe pins; fetch the right one or update the pin",
        )
    return actual
