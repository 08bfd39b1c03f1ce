"""Make a wixl-built MSI reproducible, after the fact.

wixl writes a random ProductCode (`Product Id="*"`) and PackageCode, the current time into the
summary information, and the input files' modification times into the cabinet. This rewrites,
in place and without changing any size: the ProductCode (in the string pool) and PackageCode
(summary information) as UUIDv5s derived from the recipe and version; the summary times; the
cabinet's file times; and storage times, all from SOURCE_DATE_EPOCH. The UpgradeCode stays
QEMU's, so installing a newer MSI still upgrades an older one.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from builder.errors import ArtifactError
from builder.formats.cfb import CfbError, CompoundFile, Entry

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:qga-builder:msi")
SUMMARY_STREAM = "\x05SummaryInformation"
PID_REVNUMBER = 9  # the PackageCode
PID_TIMES = (11, 12, 13)  # last printed, created, last saved
VT_LPSTR = 30
VT_FILETIME = 64


@dataclass(frozen=True)
class Codes:
    product: str
    package: str


def derive_codes(recipe: str, version: str, inputs: str) -> Codes:
    """ProductCode from recipe and version; PackageCode also from every input (cache key)."""

    def guid(name: str) -> str:
        return "{" + str(uuid.uuid5(NAMESPACE, name)).upper() + "}"

    return Codes(
        product=guid(f"{recipe}|{version}|product"),
        package=guid(f"{recipe}|{version}|{inputs}|package"),
    )


def filetime(epoch: int) -> int:
    return (epoch + 11644473600) * 10_000_000


def dos_datetime(epoch: int) -> tuple[int, int]:
    moment = datetime.fromtimestamp(max(epoch, 315532800), UTC)  # DOS time starts in 1980
    date = ((moment.year - 1980) << 9) | (moment.month << 5) | moment.day
    time = (moment.hour << 11) | (moment.minute << 5) | (moment.second // 2)
    return date, time


def make_reproducible(path: Path, codes: Codes, old_product_code: str, epoch: int) -> None:
    try:
        cfb = CompoundFile(bytearray(path.read_bytes()))
        by_name = {entry.name: entry for entry in cfb.streams()}
        summary = by_name.get(SUMMARY_STREAM)
        if summary is None:
            raise ArtifactError(f"{path.name}: no summary information stream")
        cfb.write(summary, _fix_summary(cfb.read(summary), codes.package, epoch))
        _replace_product_code(cfb, old_product_code, codes.product, path.name)
        cabinets = [e for e in cfb.streams() if cfb.read(e)[:4] == b"MSCF"]
        for cabinet in cabinets:
            cfb.write(cabinet, _fix_cabinet(cfb.read(cabinet), epoch))
        cfb.set_entry_times(filetime(epoch))
    except (CfbError, struct.error) as exc:
        raise ArtifactError(f"{path.name}: cannot post-process the MSI: {exc}") from None
    path.write_bytes(bytes(cfb.data))


def _fix_summary(data: bytes, package_code: str, epoch: int) -> bytes:
    out = bytearray(data)
    (section,) = struct.unpack_from("<I", out, 44)  # offset of the first (only) section
    (count,) = struct.unpack_from("<I", out, section + 4)
    for index in range(count):
        prop_id, offset = struct.unpack_from("<II", out, section + 8 + 8 * index)
        at = section + offset
        (vtype,) = struct.unpack_from("<I", out, at)
        if prop_id == PID_REVNUMBER and vtype == VT_LPSTR:
            (size,) = struct.unpack_from("<I", out, at + 4)
            value = package_code.encode() + b"\0"
            if size < len(value):
                raise ArtifactError("the package code field is too short")
            out[at + 8 : at + 8 + size] = value + b"\0" * (size - len(value))
        elif prop_id in PID_TIMES and vtype == VT_FILETIME:
            struct.pack_into("<Q", out, at + 4, filetime(epoch))
    return bytes(out)


def _replace_product_code(cfb: CompoundFile, old: str, new: str, name: str) -> None:
    old_bytes = old.upper().encode()
    hits: list[tuple[Entry, bytes]] = []
    for entry in cfb.streams():
        content = cfb.read(entry)
        if content.count(old_bytes):
            hits.append((entry, content))
    if len(hits) != 1 or hits[0][1].count(old_bytes) != 1:
        raise ArtifactError(f"{name}: ProductCode {old} is not in the string pool exactly once")
    entry, content = hits[0]
    cfb.write(entry, content.replace(old_bytes, new.encode()))


def _fix_cabinet(data: bytes, epoch: int) -> bytes:
    out = bytearray(data)
    (files_offset,) = struct.unpack_from("<I", out, 16)
    (count,) = struct.unpack_from("<H", out, 28)
    date, time = dos_datetime(epoch)
    at = files_offset
    for _ in range(count):
        struct.pack_into("<HH", out, at + 10, date, time)
        end = out.index(b"\0", at + 16)
        at = end + 1
    return bytes(out)
