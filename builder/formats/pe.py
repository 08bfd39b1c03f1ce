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
