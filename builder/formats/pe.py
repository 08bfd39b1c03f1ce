"""Read a PE file's import tables (normal and delay-load) and its link timestamp.

Used to check that an MSI ships exactly the DLLs its executables need: no objdump, no parsing
of tool output, just the headers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

IMPORT_DIRECTORY = 1
DELAY_IMPORT_DIRECTORY = 13


class PeFormatError(ValueError):
    pass


@dataclass(frozen=True)
class PeInfo:
    machine: int
    timestamp: int
    is_dll: bool
    imports: tuple[str, ...]  # DLL names as written in the file

    def describe(self) -> str:
        kind = "DLL" if self.is_dll else "executable"
        return f"PE {kind}, machine {self.machine:#x}, imports {', '.join(self.imports)}"


def read_pe(path: Path) -> PeInfo:
    return parse_pe(path.read_bytes())


def parse_pe(data: bytes) -> PeInfo:
    try:
        if data[:2] != b"MZ":
            raise PeFormatError("not a PE file (no MZ header)")
        (pe_offset,) = struct.unpack_from("<I", data, 0x3C)
        if data[pe_offset : pe_offset + 4] != b"PE\0\0":
            raise PeFormatError("not a PE file (no PE signature)")
        coff = pe_offset + 4
        machine, sections, timestamp, _, _, optional_size, characteristics = struct.unpack_from(
            "<HHIIIHH", data, coff
        )
        optional = coff + 20
        (magic,) = struct.unpack_from("<H", data, optional)
        if magic == 0x20B:
            directories = optional + 112
        elif magic == 0x10B:
            directories = optional + 96
        else:
            raise PeFormatError(f"unknown optional header magic {magic:#x}")
        table = optional + optional_size
        section_list = [
            struct.unpack_from("<IIII", data, table + 40 * index + 8) for index in range(sections)
        ]

        def offset(rva: int) -> int:
            for virtual_size, address, raw_size, raw_pointer in section_list:
                if address <= rva < address + max(virtual_size, raw_size):
                    return rva - address + raw_pointer
            raise PeFormatError(f"address {rva:#x} is in no section")

        def string(rva: int) -> str:
            start = offset(rva)
            return data[start : data.index(b"\0", start)].decode("ascii", errors="replace")

        imports: list[str] = []
        for directory, entry_size, name_field in (
            (IMPORT_DIRECTORY, 20, 12),
            (DELAY_IMPORT_DIRECTORY, 32, 4),
        ):
            rva, size = struct.unpack_from("<II", data, directories + 8 * directory)
            if not rva or not size:
                continue
            at = offset(rva)
            while True:
                entry = data[at : at + entry_size]
                if len(entry) < entry_size or not any(entry):
                    break
                (name_rva,) = struct.unpack_from("<I", entry, name_field)
                imports.append(string(name_rva))
                at += entry_size
    except (struct.error, ValueError) as exc:
        if isinstance(exc, PeFormatError):
            raise
        raise PeFormatError(f"truncated or malformed PE headers: {exc}") from None
    return PeInfo(machine, timestamp, bool(characteristics & 0x2000), tuple(imports))


CERTIFICATE_DIRECTORY = 4  # the Authenticode signature: a file offset and size, not an RVA


def signature_span(data: bytes) -> tuple[int, int]:
    """Where the file's Authenticode signature lies, (offset, size); (0, 0) when unsigned."""
    try:
        (pe_offset,) = struct.unpack_from("<I", data, 0x3C)
        if data[:2] != b"MZ" or data[pe_offset : pe_offset + 4] != b"PE\0\0":
            raise PeFormatError("not a PE file")
        optional = pe_offset + 24
        (magic,) = struct.unpack_from("<H", data, optional)
        directories = optional + (112 if magic == 0x20B else 96)
        offset, size = struct.unpack_from("<II", data, directories + 8 * CERTIFICATE_DIRECTORY)
    except struct.error:
        raise PeFormatError("truncated or malformed PE headers") from None
    return offset, size


def without_signing_traces(data: bytes) -> bytes:
    """A PE file as compared across signing: its CheckSum zeroed and its length padded with
    zeros to 8 bytes. Signing pads the file to 8 bytes and sets the CheckSum; removing the
    signature keeps both, so an unsigned build and a signed file with its signature removed
    are equal in this form (and byte for byte when the file was 8-byte aligned already)."""
    (pe_offset,) = struct.unpack_from("<I", data, 0x3C)
    out = bytearray(data)
    struct.pack_into("<I", out, pe_offset + 24 + 64, 0)
    out += bytes(-len(out) % 8)
    return bytes(out)


def is_signed(data: bytes) -> bool:
    return signature_span(data)[1] > 0


def minimal_pe() -> bytes:
    """The smallest x86-64 executable a signer takes (one section holding `ret`): what a key
    is tried on before anything is built."""
    dos = bytearray(0x40)
    dos[:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, 240, 0x0022)
    optional = struct.pack(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        0x20B, 0, 0, 0x200, 0, 0, 0x1000, 0x1000, 0x140000000, 0x1000, 0x200,
        6, 0, 0, 0, 6, 0, 0, 0x2000, 0x200, 0, 3, 0,
        0x100000, 0x1000, 0x100000, 0x1000, 0, 16,
    ) + bytes(16 * 8)  # fmt: skip
    section = struct.pack("<8sIIIIIIHHI", b".text", 1, 0x1000, 0x200, 0x200, 0, 0, 0, 0, 0x60000020)
    headers = bytes(dos) + b"PE\0\0" + coff + optional + section
    image = bytearray(headers.ljust(0x200, b"\0") + b"\xc3".ljust(0x200, b"\0"))
    struct.pack_into("<I", image, CHECKSUM_AT, pe_checksum(bytes(image)))  # as linkers write it
    return bytes(image)


CHECKSUM_AT = 0x40 + 24 + 64  # minimal_pe's optional header's CheckSum field


def pe_checksum(data: bytes) -> int:
    """The optional header's CheckSum of `data`, whose CheckSum field is zero: its 16-bit words
    summed with carries folded, plus the file's length."""
    total = 0
    for (word,) in struct.iter_unpack("<H", data + b"\0" * (len(data) % 2)):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total + len(data)
