"""Read an ELF file's headers to tell whether it is static and stripped (no `file` parsing).

Static means: no PT_INTERP program header (nothing asks for a dynamic loader) and no DT_NEEDED
entry in the dynamic section (a static-pie binary has a PT_DYNAMIC for its own relocations, but
it needs no shared library). Stripped means: no SHT_SYMTAB section.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

PT_DYNAMIC = 2
PT_INTERP = 3
DT_NULL = 0
DT_NEEDED = 1
SHT_SYMTAB = 2
ET_DYN = 3


class ElfFormatError(ValueError):
    pass


@dataclass(frozen=True)
class ElfInfo:
    bits: int
    machine: int
    elf_type: int
    interpreter: str | None
    needed: tuple[str, ...]
    has_symtab: bool

    @property
    def is_static(self) -> bool:
        return self.interpreter is None and not self.needed

    @property
    def is_stripped(self) -> bool:
        return not self.has_symtab

    def describe(self) -> str:
        linkage = "static" if self.is_static else "dynamic"
        pie = "-pie" if self.is_static and self.elf_type == ET_DYN else ""
        return (
            f"ELF{self.bits} {linkage}{pie}, {'stripped' if self.is_stripped else 'not stripped'}"
        )


def read_elf(path: Path) -> ElfInfo:
    return parse_elf(path.read_bytes())


def parse_elf(data: bytes) -> ElfInfo:
    if len(data) < 16 or data[:4] != b"\x7fELF":
        raise ElfFormatError("not an ELF file")
    ei_class, ei_data = data[4], data[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise ElfFormatError("unknown ELF class or byte order")
    is64 = ei_class == 2
    end = "<" if ei_data == 1 else ">"
    try:
        header = end + ("HHIQQQIHHHHHH" if is64 else "HHIIIIIHHHHHH")  # Elf64_Ehdr / Elf32_Ehdr
        fields = struct.unpack_from(header, data, 16)
        e_type, e_machine, e_phoff, e_shoff = fields[0], fields[1], fields[4], fields[5]
        e_phentsize, e_phnum, e_shentsize, e_shnum = fields[8], fields[9], fields[10], fields[11]
        segments = [_segment(data, end, is64, e_phoff + i * e_phentsize) for i in range(e_phnum)]
        interpreter = None
        needed_offsets: list[int] = []
        for p_type, offset, filesz in segments:
            if p_type == PT_INTERP:
                interpreter = (
                    data[offset : offset + filesz].split(b"\0", 1)[0].decode(errors="replace")
                )
            elif p_type == PT_DYNAMIC:
                needed_offsets += _needed(data, end, is64, offset, filesz)
        has_symtab = any(
            _section_type(data, end, is64, e_shoff + i * e_shentsize) == SHT_SYMTAB
            for i in range(e_shnum if e_shoff else 0)
        )
    except struct.error as exc:
        raise ElfFormatError(f"truncated ELF headers: {exc}") from None
    # Library names live in the dynamic string table; their count is what matters here.
    needed = tuple(f"DT_NEEDED@{value}" for value in needed_offsets)
    return ElfInfo(64 if is64 else 32, e_machine, e_type, interpreter, needed, has_symtab)


def _segment(data: bytes, end: str, is64: bool, at: int) -> tuple[int, int, int]:
    if is64:
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(end + "IIQQQQ", data, at)
    else:
        p_type, p_offset, _, _, p_filesz = struct.unpack_from(end + "IIIII", data, at)
    return p_type, p_offset, p_filesz


def _needed(data: bytes, end: str, is64: bool, offset: int, size: int) -> list[int]:
    entry = struct.Struct(end + ("qQ" if is64 else "iI"))
    values = []
    for at in range(offset, offset + size - entry.size + 1, entry.size):
        tag, value = entry.unpack_from(data, at)
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            values.append(value)
    return values


def _section_type(data: bytes, end: str, is64: bool, at: int) -> int:
    (sh_type,) = struct.unpack_from(end + "I", data, at + 4)
    return int(sh_type)
