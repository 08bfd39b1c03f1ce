"""`verify RECIPE --against DIR/SHA256SUMS` when DIR's Windows files carry Authenticode
signatures: a rebuild has no key, so each signed file is compared with its signature removed.

Signing pads a PE file to 8 bytes and sets its CheckSum, and removing the signature keeps both,
so PE files are compared in `pe.without_signing_traces` form (byte for byte when the file was
aligned, as the agent is). An MSI holds signed files and was made again from them, so it is
compared by what it holds: each of its files, signature removed, against the rebuilt MSI's.
Which files are signed comes from DIR's manifest; what is compared are the files' own bytes.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import InputError
from builder.formats import cabinet
from builder.formats.checksums import sha256_bytes, sha256_file
from builder.formats.manifest import MANIFEST_NAME
from builder.formats.pe import PeFormatError, is_signed, without_signing_traces
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
    return sorted(n for n in files if isinstance(n, str)) if isinstance(files, dict) else []


class _Stripper:
    """Signatures removed in a scratch directory of its own, each file under a fresh name
    (osslsigncode never overwrites; names from the reference are never used as paths)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.numbers = itertools.count()

    def compared_form(self, data: bytes) -> bytes:
        """What a file is compared as: a signed PE without its signature, in
        `without_signing_traces` form; an unsigned PE in that form too; anything else as is."""
        try:
            if data[:2] != b"MZ":
                return data
            if is_signed(data):
                number = next(self.numbers)
                signed, stripped = self.root / f"{number}.in", self.root / f"{number}.out"
                signed.write_bytes(data)
                authenticode.remove_signature(signed, stripped)
                data = stripped.read_bytes()
            return without_signing_traces(data)
        except PeFormatError:
            return data


def unsigned_view(
    directory: Path, expected: dict[str, str], built: Path, names: list[str]
) -> UnsignedView:
    view = UnsignedView(dict(expected))
    with tempfile.TemporaryDirectory(prefix="qga-unsigned-") as scratch:
        stripper = _Stripper(Path(scratch))
        for name in names:
            published, rebuilt = directory / name, built / name
            if name not in expected or "/" in name or not published.is_file():
                continue
            if sha256_file(published) != expected[name] or not rebuilt.is_file():
                continue  # a changed file stays "different": its line no longer holds
            try:
                if name.lower().endswith(".msi"):
                    same = _same_msi(published, rebuilt, stripper)
                    how = "by the files it holds, each with its Authenticode signature removed"
                else:
                    forms = [stripper.compared_form(p.read_bytes()) for p in (published, rebuilt)]
                    same = forms[0] == forms[1]
                    how = "with its Authenticode signature removed"
            except (authenticode.AuthenticodeFailure, cabinet.CabinetError) as exc:
                view.notes.append(f"{name}: not compared without signatures ({exc})")
                continue
            if same:
                view.expected[name] = sha256_file(rebuilt)
                view.notes.append(f"{name}: compared {how}: the same")
            else:
                view.notes.append(f"{name}: compared {how}: it differs")
    return view


def _same_msi(published: Path, rebuilt: Path, stripper: _Stripper) -> bool:
    """The same files (as a multiset: one file may be installed under two names), each in its
    compared form. The MSI itself was made again from the signed files: its own bytes differ."""
    holds = Counter(
        sha256_bytes(stripper.compared_form(data)) for data in cabinet.msi_files(published).values()
    )
    wanted = Counter(
        sha256_bytes(stripper.compared_form(data)) for data in cabinet.msi_files(rebuilt).values()
    )
    return holds == wanted
