"""What an MSI holds, and whether it holds exactly what the agent needs.

The tables come from `msiinfo export` (msitools, in the build image); the files from
`msiextract`. The checks: qemu-ga.exe is there; every DLL that the installed executables and
qga-vss.dll import, directly or through other shipped DLLs, is shipped (nothing missing); every
shipped DLL is imported by something (nothing unused); the QEMU-GA service is installed; the VSS
provider is registered by custom actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from builder.formats.pe import PeInfo

AGENT_EXE = "qemu-ga.exe"
VSS_DLL = "qga-vss.dll"
SERVICE_NAME = "QEMU-GA"

# DLLs every Windows has; an import of one of these is never "missing" from the MSI.
SYSTEM_DLLS = frozenset(
    [
        "advapi32",
        "bcrypt",
        "cfgmgr32",
        "comctl32",
        "comdlg32",
        "credui",
        "crypt32",
        "dbghelp",
        "dnsapi",
        "dxgi",
        "gdi32",
        "imagehlp",
        "iphlpapi",
        "kernel32",
        "mpr",
        "msi",
        "msvcrt",
        "netapi32",
        "normaliz",
        "ntdll",
        "ntdsapi",
        "ole32",
        "oleaut32",
        "pdh",
        "powrprof",
        "psapi",
        "rpcrt4",
        "secur32",
        "setupapi",
        "shell32",
        "shlwapi",
        "ucrtbase",
        "user32",
        "userenv",
        "version",
        "vssapi",
        "wevtapi",
        "winhttp",
        "wininet",
        "winmm",
        "wintrust",
        "wldap32",
        "ws2_32",
        "wsock32",
        "wtsapi32",
    ]
)


def is_system_dll(name: str) -> bool:
    lower = name.lower()
    return lower.removesuffix(".dll") in SYSTEM_DLLS or lower.startswith(
        ("api-ms-win-", "ext-ms-win-")
    )


def parse_table(text: str) -> list[dict[str, str]]:
    """`msiinfo export MSI TABLE` output: names, types, table line, then tab-separated rows."""
    lines = text.splitlines()
    if len(lines) < 3:
        return []
    columns = lines[0].split("\t")
    rows = []
    for line in lines[3:]:
        if line:
            values = line.split("\t")
            rows.append(
                dict(zip(columns, values + [""] * (len(columns) - len(values)), strict=True))
            )
    return rows


def long_name(file_name: str) -> str:
    """The File table's FileName is `SHORT~1.EXE|long-name.exe` or just the name."""
    return file_name.split("|", 1)[-1]


@dataclass
class MsiCheck:
    files: list[str]
    problems: list[str] = field(default_factory=list)
    reached: list[str] = field(default_factory=list)  # DLLs imported from the roots

    @property
    def ok(self) -> bool:
        return not self.problems


def check(
    file_table: list[dict[str, str]],
    service_table: list[dict[str, str]],
    action_table: list[dict[str, str]],
    pe: Mapping[str, PeInfo],
) -> MsiCheck:
    """pe: the PE headers of every .exe/.dll extracted from the MSI, by file name."""
    files = sorted({long_name(row["FileName"]) for row in file_table})
    result = MsiCheck(files=files)
    shipped = {name.lower(): name for name in files}
    if AGENT_EXE not in shipped:
        result.problems.append(f"{AGENT_EXE} is not in the MSI")
    roots = [name for name in files if name.lower().endswith(".exe")]
    roots += [name for name in files if name.lower() == VSS_DLL]
    seen: set[str] = set()
    queue = list(roots)
    while queue:
        current = queue.pop()
        if current.lower() in seen:
            continue
        seen.add(current.lower())
        info = pe.get(current)
        if info is None:
            result.problems.append(f"{current} is in the MSI but could not be read as PE")
            continue
        for dll in info.imports:
            if dll.lower() in shipped:
                queue.append(shipped[dll.lower()])
            elif not is_system_dll(dll):
                result.problems.append(f"{current} imports {dll}, which the MSI lacks")
    result.reached = sorted(shipped[name] for name in seen if name.endswith(".dll"))
    unused = [name for name in files if name.lower().endswith(".dll") and name.lower() not in seen]
    result.problems += [f"{name} is in the MSI but nothing imports it" for name in unused]
    if not any(row.get("Name") == SERVICE_NAME for row in service_table):
        result.problems.append(f"the MSI does not install the {SERVICE_NAME} service")
    if VSS_DLL in shipped:
        registers = [row for row in action_table if "DLLCOMRegister" in row.get("Target", "")]
        if not registers:
            result.problems.append(f"{VSS_DLL} is shipped but no custom action registers it")
    return result
