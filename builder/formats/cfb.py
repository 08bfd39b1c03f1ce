"""Just enough of the Compound File Binary format (the container of .msi files) to read streams
and to overwrite bytes inside them in place, for reproducible MSIs.

Spec: [MS-CFB]. Streams smaller than the mini-stream cutoff live in the mini stream (stored in
the root entry's own stream); larger ones in regular sectors chained through the FAT. Patching
never changes a stream's size, so no allocation table has to be rewritten.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ENDOFCHAIN = 0xFFFFFFFE
FREESECT = 0xFFFFFFFF
MAX_CHAIN = 1 << 22


class CfbError(ValueError):
    pass


@dataclass
class Entry:
    index: int
    name: str  # as stored (MSI mangles stream names)
    kind: int  # 1 storage, 2 stream, 5 root
    start: int
    size: int
    offset: int  # of the 128-byte directory entry in the file


class CompoundFile:
    def __init__(self, data: bytearray) -> None:
        if data[:8] != SIGNATURE:
            raise CfbError("not a compound file (bad signature)")
        self.data = data
        self.sector_size = 1 << struct.unpack_from("<H", data, 0x1E)[0]
        self.mini_size = 1 << struct.unpack_from("<H", data, 0x20)[0]
        (
            fat_count,
            self.dir_start,
            _,
            self.cutoff,
            self.minifat_start,
            minifat_count,
            difat_start,
            difat_count,
        ) = struct.unpack_from("<IIIIIIII", data, 0x2C)
        self.fat = self._read_fat(fat_count, difat_start, difat_count)
        self.entries = self._read_directory()
        root = self.entries[0]
        self.mini_stream_sectors = self._chain(root.start) if root.start != ENDOFCHAIN else []
        minifat_bytes = (
            b"".join(self._sector(s) for s in self._chain(self.minifat_start))
            if minifat_count
            else b""
        )
        self.minifat = list(struct.unpack(f"<{len(minifat_bytes) // 4}I", minifat_bytes))

    # --- structure -----------------------------------------------------------------------

    def _sector_offset(self, sector: int) -> int:
        offset = (sector + 1) * self.sector_size
        if offset + self.sector_size > len(self.data):
            raise CfbError(f"sector {sector} lies beyond the end of the file")
        return offset

    def _sector(self, sector: int) -> bytes:
        offset = self._sector_offset(sector)
        return bytes(self.data[offset : offset + self.sector_size])

    def _read_fat(self, fat_count: int, difat_start: int, difat_count: int) -> list[int]:
        difat = list(struct.unpack_from("<109I", self.data, 0x4C))
        sector = difat_start
        for _ in range(difat_count):
            if sector in (ENDOFCHAIN, FREESECT):
                break
            words = struct.unpack(f"<{self.sector_size // 4}I", self._sector(sector))
            difat += words[:-1]
            sector = words[-1]
        fat_sectors = [s for s in difat if s not in (FREESECT, ENDOFCHAIN)][:fat_count]
        raw = b"".join(self._sector(s) for s in fat_sectors)
        return list(struct.unpack(f"<{len(raw) // 4}I", raw))

    def _chain(self, start: int, table: list[int] | None = None) -> list[int]:
        table = self.fat if table is None else table
        chain = []
        sector = start
        while sector not in (ENDOFCHAIN, FREESECT):
            if sector >= len(table) or len(chain) > MAX_CHAIN:
                raise CfbError("broken sector chain")
            chain.append(sector)
            sector = table[sector]
        return chain

    def _read_directory(self) -> list[Entry]:
        entries = []
        for sector in self._chain(self.dir_start):
            base = self._sector_offset(sector)
            for slot in range(self.sector_size // 128):
                at = base + slot * 128
                name_len = struct.unpack_from("<H", self.data, at + 64)[0]
                kind = self.data[at + 66]
                start, size = struct.unpack_from("<IQ", self.data, at + 116)
                raw_name = bytes(self.data[at : at + max(0, name_len - 2)])
                entries.append(
                    Entry(
                        len(entries), raw_name.decode("utf-16-le", "replace"), kind, start, size, at
                    )
                )
        if not entries or entries[0].kind != 5:
            raise CfbError("no root entry")
        return entries

    # --- streams --------------------------------------------------------------------------

    def streams(self) -> list[Entry]:
        return [entry for entry in self.entries if entry.kind == 2]

    def _byte_offsets(self, entry: Entry) -> list[tuple[int, int]]:
        """(file offset, length) runs that hold the stream's bytes, in order."""
        runs = []
        if entry.size < self.cutoff:
            for mini in self._chain(entry.start, self.minifat):
                position = mini * self.mini_size
                sector = self.mini_stream_sectors[position // self.sector_size]
                runs.append(
                    (self._sector_offset(sector) + position % self.sector_size, self.mini_size)
                )
        else:
            runs = [(self._sector_offset(s), self.sector_size) for s in self._chain(entry.start)]
        remaining = entry.size
        trimmed = []
        for offset, length in runs:
            if remaining <= 0:
                break
            trimmed.append((offset, min(length, remaining)))
            remaining -= length
        if remaining > 0:
            raise CfbError(f"stream {entry.name!r} is shorter on disk than its size")
        return trimmed

    def read(self, entry: Entry) -> bytes:
        return b"".join(bytes(self.data[o : o + n]) for o, n in self._byte_offsets(entry))

    def write(self, entry: Entry, content: bytes) -> None:
        """Overwrite a stream's bytes in place; the size must stay the same."""
        if len(content) != entry.size:
            raise CfbError(f"stream {entry.name!r}: size would change")
        at = 0
        for offset, length in self._byte_offsets(entry):
            self.data[offset : offset + length] = content[at : at + length]
            at += length

    def set_entry_times(self, filetime: int) -> None:
        """Pin the creation and modification times that storages carry (streams carry none);
        a time left at zero (as the root's creation time must be) stays zero."""
        for entry in self.entries:
            if entry.kind in (1, 5):
                for field in (entry.offset + 100, entry.offset + 108):
                    if struct.unpack_from("<Q", self.data, field)[0]:
                        struct.pack_into("<Q", self.data, field, filetime)
