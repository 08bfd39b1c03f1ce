"""`verify RECIPE --against DIR/SHA256SUMS` when DIR's Windows files carry Authenticode
signatures: a rebuild has no key, so each signed file is compared with its signature removed.

A PE file loses its signature to the very bytes that were signed (`osslsigncode
remove-signature`). An MSI holds signed files and is made again from them, so it is compared by
what it holds: each of its files, signature removed, against the rebuilt MSI's files. Which
files are signed comes from DIR's manifest; what is compared are the files' own bytes.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import InputError
from builder.formats import cabinet
from builder.formats.checksums import sha256_bytes, sha256_file
from builder.formats.manifest import MANIFEST_NAME
from builder.formats.pe import PeFormatError, is_signed
from builder.host import authenticode

MAX_MANIFEST_BYTES = 16 << 20


@dataclass
class UnsignedView:
    expected: dict[str, str]  # the reference's lines, signed files replaced by what they hold
    notes: list[str] = field(default_factory=list)


def signed_names(directory: Path) -> list[str]:
    """The files DIR's manifest says were signed with Authenticode (none without a record)."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        return []
    try:
        with path.open("rb") as handle:
            manifest = json.loads(handle.read(MAX_MANIFEST_BYTES))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable manifest ({exc})") from None
    record = manifest.get("authenticode") if isinstance(manifest, dict) else None
    files = record.get("files") if isinstance(record, dict) else None
    return sorted(files) if isinstance(files, dict) else []


def unsigned_view(
    directory: Path, expected: dict[str, str], built: Path, names: list[str]
) -> UnsignedView:
    view = UnsignedView(dict(expected))
    with tempfile.TemporaryDirectory(prefix="qga-unsigned-") as scratch:
        root = Path(scratch)
        for name in names:
            published = directory / name
            if name not in expected or not published.is_file():
                continue
            if sha256_file(published) != expected[name]:
                continue  # a changed file stays "different": its line no longer holds
            if name.lower().endswith(".msi"):
                view.expected[name] = _msi(published, built / name, root, view.notes)
            else:
                stripped = root / name
                try:
                    authenticode.remove_signature(published, stripped)
                except authenticode.AuthenticodeFailure as exc:
                    view.notes.append(f"{name}: its signature could not be removed ({exc})")
                    continue
                view.expected[name] = sha256_file(stripped)
                view.notes.append(f"{name}: compared with its Authenticode signature removed")
    return view


def _msi(published: Path, rebuilt: Path, scratch: Path, notes: list[str]) -> str:
    """The rebuilt MSI's digest when the published one holds the same files (signatures
    removed), else the published one's (so it compares as different)."""
    if not rebuilt.is_file():
        return sha256_file(published)
    try:
        holds = Counter(_unsigned(data, scratch) for data in cabinet.msi_files(published).values())
        wanted = Counter(sha256_bytes(data) for data in cabinet.msi_files(rebuilt).values())
    except cabinet.CabinetError as exc:
        notes.append(f"{published.name}: {exc}")
        return sha256_file(published)
    if holds != wanted:
        notes.append(f"{published.name}: its files differ from the rebuilt MSI's")
        return sha256_file(published)
    notes.append(
        f"{published.name}: compared by its {sum(holds.values())} files, each with its "
        "Authenticode signature removed (the MSI itself is made again from the signed files)"
    )
    return sha256_file(rebuilt)


def _unsigned(data: bytes, scratch: Path) -> str:
    try:
        signed = data[:2] == b"MZ" and is_signed(data)
    except PeFormatError:
        signed = False
    if not signed:
        return sha256_bytes(data)
    source, stripped = scratch / "member", scratch / "member.unsigned"
    source.write_bytes(data)
    try:
        authenticode.remove_signature(source, stripped)
    except authenticode.AuthenticodeFailure:
        return sha256_bytes(data)  # compares as different
    return sha256_file(stripped)
