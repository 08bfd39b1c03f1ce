"""The files of the cabinets inside an MSI (what wixl writes: MSZIP or stored), read on the host.

`verify` compares a signed MSI with an unsigned rebuild by the files it holds; this reads them
without msitools. Bounded: an MSI from elsewhere is untrusted input.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from builder.formats.cfb import CfbError, CompoundFile

CAB_MAGIC = b"MSCF"
STORED, MSZIP = 0, 1
MAX_BLOCK = 32768 + 12  # MSZIP: a block unpacks to 32 KiB at most
MAX_TOTAL = 1 << 31


class CabinetError(ValueError):
    pass


def msi_files(path: Path) -> dict[str, bytes]:
    """Every file of every cabinet stream of the MSI, by its name in the cabinet (the File
    table's key)."""
    try:
        compound = CompoundFile(bytearray(path.read_bytes()))
        streams = [compound.read(entry) for entry in compound.streams()]
    except (CfbError, ValueError, IndexError, struct.error) as exc:
        raise CabinetError(f"{path.name}: not a readable MSI ({exc})") from None
    files: dict[str, bytes] = {}
    for data in streams:
        if data[:4] == CAB_MAGIC:
            files |= read_cabinet(data)
    return files


def read_cabinet(data: bytes) -> dict[str, bytes]:
    try:
        return _read(data)
    except CabinetError:
        raise
    except (struct.error, zlib.error, IndexError, ValueError) as exc:
        raise CabinetError(f"malformed cabinet: {exc}") from None


def _read(data: bytes) -> dict[str, bytes]:
    files_offset, _, _, _, folder_count, file_count, flags = struct.unpack_from(
        "<I4sBBHHH", data, 16
    )
    if flags & 0x7:  # reserved fields, or a set of cabinets: wixl writes neither
        raise CabinetError("cabinets with reserved fields or spanning several are not read")
    entries = []
    at = files_offset
    for _ in range(file_count):
        size, offset, folder = struct.unpack_from("<IIH", data, at)
        end = data.index(b"\0", at + 16)
        entries.append((data[at + 16 : end].decode("utf-8", "replace"), size, offset, folder))
        at = end + 1
    if sum(size for _, size, _, _ in entries) > MAX_TOTAL:
        raise CabinetError("its files add up to more than 2 GiB")
    folders: dict[int, bytes] = {}
    budget = [MAX_TOTAL]  # shared by every folder: blocks unpacked in all of them, at most
    for index in sorted({folder for _, _, _, folder in entries}):
        if index >= folder_count:
            raise CabinetError(f"a file lies in folder {index}, of {folder_count}")
        first, blocks, compression = struct.unpack_from("<IHH", data, 36 + 8 * index)
        if compression & 0xF not in (STORED, MSZIP):
            raise CabinetError(f"folder {index}: compression {compression:#x} is not read")
        folders[index] = _unpack_folder(data, first, blocks, compression & 0xF, budget)
    files: dict[str, bytes] = {}
    for name, size, offset, folder in entries:
        content = folders[folder][offset : offset + size]
        if len(content) != size:
            raise CabinetError(f"{name}: its data runs past its folder")
        files[name] = content
    return files


def _unpack_folder(data: bytes, at: int, blocks: int, compression: int, budget: list[int]) -> bytes:
    out = bytearray()
    history = b""
    for _ in range(blocks):
        _, packed, unpacked = struct.unpack_from("<IHH", data, at)
        block = data[at + 8 : at + 8 + packed]
        at += 8 + packed
        if compression == STORED:
            piece = block
        else:
            if block[:2] != b"CK":
                raise CabinetError("an MSZIP block without its CK signature")
            # Each block is a deflate stream whose window is the previous block's output.
            inflater = zlib.decompressobj(-15, zdict=history or b"")
            piece = inflater.decompress(block[2:], MAX_BLOCK)
        if len(piece) != unpacked:
            raise CabinetError(f"a block unpacked to {len(piece)} bytes, expected {unpacked}")
        history = piece
        out += piece
        budget[0] -= len(piece)
        if budget[0] < 0:
            raise CabinetError("more than 2 GiB of files")
    return bytes(out)
