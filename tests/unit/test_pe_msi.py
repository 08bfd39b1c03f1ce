"""PE import tables and the MSI content check, on small inputs made here."""

from __future__ import annotations

import struct

import pytest

from builder.formats.msi import check, parse_table
from builder.formats.pe import PeFormatError, PeInfo, parse_pe


def make_pe(
    imports: list[str],
    delay: list[str] = (),
    *,
    dll: bool = False,
    timestamp: int = 0x5F5E100,
    machine: int = 0x8664,
) -> bytes:
    """A minimal PE32+ image: headers, one section holding the import directories and names."""
    section_rva, section_raw, align = 0x1000, 0x200, 0x200
    names = b""
    name_rvas = []
    for name in [*imports, *delay]:
        name_rvas.append(section_rva + 0x100 + len(names))
        names += name.encode() + b"\0"
    body = bytearray(0x100)
    for index in range(len(imports)):  # IMAGE_IMPORT_DESCRIPTOR, 20 bytes, name at +12
        struct.pack_into("<IIIII", body, 20 * index, 0, 0, 0, name_rvas[index], 0)
    delay_at = 20 * (len(imports) + 1)
    for index in range(len(delay)):  # delay-load descriptor, 32 bytes, name at +4
        struct.pack_into(
            "<IIIIIIII",
            body,
            delay_at + 32 * index,
            1,
            name_rvas[len(imports) + index],
            0,
            0,
            0,
            0,
            0,
            0,
        )
    body += names
    body += b"\0" * (-len(body) % align)
    optional = bytearray(240)
    struct.pack_into("<H", optional, 0, 0x20B)
    struct.pack_into("<I", optional, 108, 16)  # NumberOfRvaAndSizes
    struct.pack_into("<II", optional, 112 + 8 * 1, section_rva, 20 * (len(imports) + 1))
    if delay:
        struct.pack_into(
            "<II", optional, 112 + 8 * 13, section_rva + delay_at, 32 * (len(delay) + 1)
        )
    coff = struct.pack(
        "<HHIIIHH", machine, 1, timestamp, 0, 0, len(optional), 0x2022 if dll else 0x22
    )
    section = struct.pack(
        "<8sIIIIIIHHI",
        b".idata",
        len(body),
        section_rva,
        len(body),
        section_raw,
        0,
        0,
        0,
        0,
        0xC0000040,
    )
    header = bytearray(b"MZ" + b"\0" * 0x3A + struct.pack("<I", 0x40))
    header += b"PE\0\0" + coff + optional + section
    header += b"\0" * (section_raw - len(header))
    return bytes(header + body)


def test_imports_and_delay_imports() -> None:
    info = parse_pe(make_pe(["libglib-2.0-0.dll", "KERNEL32.dll"], ["WTSAPI32.dll"], dll=True))
    assert info.imports == ("libglib-2.0-0.dll", "KERNEL32.dll", "WTSAPI32.dll")
    assert info.machine == 0x8664 and info.is_dll and info.timestamp == 0x5F5E100


@pytest.mark.parametrize("data", [b"", b"MZ" + b"\0" * 100, b"\x7fELF" + b"\0" * 200])
def test_not_pe(data: bytes) -> None:
    with pytest.raises(PeFormatError):
        parse_pe(data)


def test_truncated_pe() -> None:
    with pytest.raises(PeFormatError):
        parse_pe(make_pe(["a.dll"])[:0x150])


FILE_TABLE = """File\tComponent_\tFileName\tFileSize\tVersion\tLanguage\tAttributes\tSequence
s72\ts72\tl255\ti4\tS72\tS20\tI2\ti4
File\tFile
qemu_ga.exe\tqemu_ga\tqemu-ga.exe\t100\t\t\t\t1
glib\tglib\tLIBGLI~1.DLL|libglib-2.0-0.dll\t100\t\t\t\t2
intl\tintl\tlibintl-8.dll\t100\t\t\t\t3
vss\tvss\tqga-vss.dll\t100\t\t\t\t4
"""
SERVICE_TABLE = "ServiceInstall\tName\ns72\ts255\nServiceInstall\tServiceInstall\nsi\tQEMU-GA\n"
ACTION_TABLE = (
    "Action\tType\tSource\tTarget\ns72\ti2\tS72\tS255\nCustomAction\tAction\n"
    "RegisterCom\t34\tqemu_ga_directory\trundll32 qga-vss.dll,DLLCOMRegister\n"
)


def pe(*imports: str) -> PeInfo:
    return parse_pe(make_pe(list(imports)))


def tables() -> tuple[list, list, list]:
    return parse_table(FILE_TABLE), parse_table(SERVICE_TABLE), parse_table(ACTION_TABLE)


def test_parse_table_reads_long_names() -> None:
    rows = parse_table(FILE_TABLE)
    assert rows[1]["FileName"] == "LIBGLI~1.DLL|libglib-2.0-0.dll" and len(rows) == 4


def test_complete_msi_passes() -> None:
    infos = {
        "qemu-ga.exe": pe("libglib-2.0-0.dll", "KERNEL32.dll"),
        "libglib-2.0-0.dll": pe("libintl-8.dll", "ws2_32.dll"),
        "libintl-8.dll": pe("KERNEL32.dll"),
        "qga-vss.dll": pe("libglib-2.0-0.dll", "OLE32.dll"),
    }
    result = check(*tables(), infos)
    assert result.ok, result.problems
    assert result.reached == ["libglib-2.0-0.dll", "libintl-8.dll", "qga-vss.dll"]


def test_missing_dll_is_named() -> None:
    infos = {
        "qemu-ga.exe": pe("libglib-2.0-0.dll", "libwinpthread-1.dll"),
        "libglib-2.0-0.dll": pe("libintl-8.dll"),
        "libintl-8.dll": pe(),
        "qga-vss.dll": pe(),
    }
    result = check(*tables(), infos)
    assert "qemu-ga.exe imports libwinpthread-1.dll, which the MSI lacks" in result.problems


def test_unused_dll_is_named() -> None:
    infos = {
        "qemu-ga.exe": pe(),
        "libglib-2.0-0.dll": pe(),
        "libintl-8.dll": pe(),
        "qga-vss.dll": pe("libglib-2.0-0.dll"),
    }
    result = check(*tables(), infos)
    assert result.problems == ["libintl-8.dll is in the MSI but nothing imports it"]


def test_service_and_vss_registration_are_required() -> None:
    infos = {
        "qemu-ga.exe": pe("libglib-2.0-0.dll"),
        "libglib-2.0-0.dll": pe("libintl-8.dll"),
        "libintl-8.dll": pe(),
        "qga-vss.dll": pe(),
    }
    result = check(parse_table(FILE_TABLE), [], [], infos)
    assert "the MSI does not install the QEMU-GA service" in result.problems
    assert "qga-vss.dll is shipped but no custom action registers it" in result.problems


def test_the_agent_beside_the_msi_is_compared_whatever_its_published_name() -> None:
    """The check compares the MSI's qemu-ga.exe with the pe artifact built as qemu-ga.exe,
    also when a release recipe publishes it under a versioned name."""
    from types import SimpleNamespace

    from builder.config.plan import ArtifactPlan
    from builder.stages.checks import shipped_agents

    exe = "qemu-ga-patched-10.2.2+qga1-windows-x86_64.exe"
    plans = (
        ArtifactPlan("qga/qemu-ga-x86_64.msi", "qemu-ga-patched-10.2.2+qga1.msi", "msi", False),
        ArtifactPlan("qga/qemu-ga.exe", exe, "pe", False),
        ArtifactPlan("qga/vss-win32/qga-vss.dll", "qga-vss.dll", "pe", False),
    )
    found = shipped_agents(SimpleNamespace(artifact_plans=plans))  # type: ignore[arg-type]
    assert [artifact.name for artifact in found] == [exe]
