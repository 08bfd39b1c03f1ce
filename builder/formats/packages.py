"""Readers for what the packager box hands back: .deb (an ar archive holding debian-binary,
control.tar.* and data.tar.*) and .rpm (lead, signature header, header). Bounded: a member or
header bigger than the file, or a count beyond the limits, is refused, never followed.
"""

from __future__ import annotations

import io
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MAX_MEMBERS = 4096


class PackageFormatError(Exception):
    pass


@dataclass(frozen=True)
class TarEntry:
    path: str  # without the leading ./
    mode: int
    uid: int
    gid: int
    size: int
    kind: str  # file, dir, symlink
    mtime: int
    linkname: str = ""


@dataclass
class DebInfo:
    control: dict[str, str]
    control_files: dict[str, bytes]  # control.tar member -> bytes (control, md5sums, scripts)
    entries: list[TarEntry]
    data: dict[str, bytes] = field(default_factory=dict)  # regular files of data.tar

    @property
    def conffiles(self) -> list[str]:
        return self.control_files.get("conffiles", b"").decode().split()


def _ar_members(blob: bytes) -> list[tuple[str, bytes]]:
    if not blob.startswith(b"!<arch>\n"):
        raise PackageFormatError("not an ar archive (no !<arch> magic)")
    members, offset = [], 8
    while offset < len(blob):
        header = blob[offset : offset + 60]
        if len(header) < 60 or header[58:60] != b"`\n":
            raise PackageFormatError(f"broken ar member header at byte {offset}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode().strip())
        except ValueError:
            raise PackageFormatError(f"ar member {name!r}: bad size") from None
        start = offset + 60
        if size < 0 or start + size > len(blob):
            raise PackageFormatError(f"ar member {name!r} runs past the end of the file")
        members.append((name, blob[start : start + size]))
        offset = start + size + (size % 2)
        if len(members) > 8:
            raise PackageFormatError("more ar members than a .deb has")
    return members


def _tar(blob: bytes, what: str, keep_data: bool) -> tuple[list[TarEntry], dict[str, bytes]]:
    entries, files = [], {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_MEMBERS:
                    raise PackageFormatError(f"{what}: more than {MAX_MEMBERS} members")
                path = member.name.removeprefix("./").rstrip("/")
                kind = "dir" if member.isdir() else "symlink" if member.issym() else "file"
                if not (member.isdir() or member.issym() or member.isfile()):
                    kind = "other"
                entries.append(
                    TarEntry(
                        path,
                        member.mode,
                        member.uid,
                        member.gid,
                        member.size,
                        kind,
                        int(member.mtime),
                        member.linkname,
                    )
                )
                if keep_data and member.isfile():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    files[path] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:  # lzma/gzip errors are OSError
        raise PackageFormatError(f"{what}: {exc}") from None
    return entries, files


def parse_control(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line[1:]
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def read_deb(path: Path, max_bytes: int = 1 << 30) -> DebInfo:
    if path.stat().st_size > max_bytes:
        raise PackageFormatError(f"larger than {max_bytes} bytes")
    members = dict(_ar_members(path.read_bytes()))
    if members.get("debian-binary", b"").strip() != b"2.0":
        raise PackageFormatError("no debian-binary member saying 2.0")
    control = next((v for k, v in members.items() if k.startswith("control.tar")), None)
    data = next((v for k, v in members.items() if k.startswith("data.tar")), None)
    if control is None or data is None:
        raise PackageFormatError("no control.tar.* or data.tar.* member")
    _, control_files = _tar(control, "control.tar", keep_data=True)
    entries, files = _tar(data, "data.tar", keep_data=True)
    if "control" not in control_files:
        raise PackageFormatError("control.tar has no control file")
    return DebInfo(parse_control(control_files["control"].decode()), control_files, entries, files)


# --- rpm ----------------------------------------------------------------------------------------

RPM_LEAD_MAGIC = b"\xed\xab\xee\xdb"
HEADER_MAGIC = b"\x8e\xad\xe8\x01"
TAGS = {
    1000: "name",
    1001: "version",
    1002: "release",
    1006: "buildtime",
    1007: "buildhost",
    1014: "license",
    1022: "arch",
    1030: "filemodes",
    1035: "filedigests",
    1037: "fileflags",
    1039: "fileusername",
    1040: "filegroupname",
    1054: "conflictname",
    1116: "dirindexes",
    1117: "basenames",
    1118: "dirnames",
    1124: "payloadformat",
    1125: "payloadcompressor",
}
RPMFILE_CONFIG = 1


@dataclass(frozen=True)
class RpmInfo:
    tags: dict[str, object]

    @property
    def files(self) -> list[str]:
        dirs = self.tags.get("dirnames", [])
        names = self.tags.get("basenames", [])
        indexes = self.tags.get("dirindexes", [])
        return [f"{dirs[i]}{n}" for i, n in zip(indexes, names, strict=True)]  # type: ignore[index,call-overload]

    @property
    def config_files(self) -> list[str]:
        flags = self.tags.get("fileflags", [])
        return [f for f, flag in zip(self.files, flags, strict=True) if flag & RPMFILE_CONFIG]  # type: ignore[call-overload]


def _header(blob: bytes, offset: int, what: str) -> tuple[dict[int, object], int]:
    if len(blob) < offset + 16:
        raise PackageFormatError(f"{what}: the file ends at byte {len(blob)}, inside the header")
    if blob[offset : offset + 4] != HEADER_MAGIC:
        raise PackageFormatError(f"{what}: no header magic at byte {offset}")
    count, size = struct.unpack(">II", blob[offset + 8 : offset + 16])
    if count > 65536 or size > len(blob):
        raise PackageFormatError(f"{what}: {count} entries, {size} bytes: beyond the file")
    index, store = offset + 16, offset + 16 + 16 * count
    if store + size > len(blob):
        raise PackageFormatError(f"{what}: runs past the end of the file")
    data = blob[store : store + size]
    tags: dict[int, object] = {}
    for n in range(count):
        tag, kind, where, number = struct.unpack(
            ">IIII", blob[index + 16 * n : index + 16 * n + 16]
        )
        if where > size:
            raise PackageFormatError(f"{what}: tag {tag} points past the store")
        if kind in (6, 8, 9):  # string, string array, i18n string
            parts = data[where:].split(b"\0")[: max(number, 1)]
            values = [p.decode("utf-8", "replace") for p in parts]
            tags[tag] = values[0] if kind == 6 else values
        elif kind in (3, 4):  # int16, int32
            width = 2 if kind == 3 else 4
            end = where + width * number
            if end > size:
                raise PackageFormatError(f"{what}: tag {tag} runs past the store")
            tags[tag] = list(
                struct.unpack(f">{number}{'H' if kind == 3 else 'I'}", data[where:end])
            )
    return tags, store + size


def read_rpm(path: Path, max_bytes: int = 1 << 30) -> RpmInfo:
    if path.stat().st_size > max_bytes:
        raise PackageFormatError(f"larger than {max_bytes} bytes")
    blob = path.read_bytes()
    if not blob.startswith(RPM_LEAD_MAGIC) or len(blob) < 96:
        raise PackageFormatError("not an rpm (no lead magic)")
    _, end = _header(blob, 96, "signature header")
    end += -end % 8  # the signature header is padded to 8 bytes
    tags, _ = _header(blob, end, "header")
    named: dict[str, object] = {}
    for number, name in TAGS.items():
        if number in tags:
            value = tags[number]
            if name in ("buildtime",) and isinstance(value, list):
                value = value[0]
            named[name] = value
    return RpmInfo(named)
