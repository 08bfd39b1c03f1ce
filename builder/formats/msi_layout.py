"""Where an MSI says it installs things: each file's directory, the registry values it writes,
the services it installs and starts. Read from its tables (`msiinfo export` rows, see
`formats.msi.parse_table`), so an install can be checked against the MSI's own word.

Only what QEMU's qemu-ga.wxs uses is resolved: standard 64-bit folders, `[DirectoryId]`
references in registry values, `#N` integers; anything else is reported, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

Table = list[dict[str, str]]

# Standard folder properties on 64-bit Windows (and in a 64-bit wine prefix).
STANDARD_FOLDERS = {
    "TARGETDIR": "C:",
    "ProgramFiles64Folder": r"C:\Program Files",
    "ProgramFilesFolder": r"C:\Program Files (x86)",
    "CommonFiles64Folder": r"C:\Program Files\Common Files",
    "CommonFilesFolder": r"C:\Program Files (x86)\Common Files",
    "System64Folder": r"C:\windows\system32",
    "WindowsFolder": r"C:\windows",
    "CommonAppDataFolder": r"C:\ProgramData",
}
ROOTS = {"0": "HKCR", "2": "HKLM"}  # the roots a per-machine install writes
ROOT_NAMES = {"HKCR": "HKEY_CLASSES_ROOT", "HKLM": "HKEY_LOCAL_MACHINE"}
START_ON_INSTALL = 0x001  # msidbServiceControlEventStart
DELETE_ON_UNINSTALL = 0x080  # msidbServiceControlEventUninstallDelete
_REFERENCE = re.compile(r"\[([A-Za-z_][A-Za-z0-9_.]*)\]")


class LayoutError(ValueError):
    pass


@dataclass(frozen=True)
class RegistryValue:
    root: str  # HKLM, HKCR
    key: str  # without a trailing backslash
    name: str  # "" for the key's default value
    kind: str  # REG_SZ or REG_DWORD
    value: str | int

    @property
    def path(self) -> str:
        return f"{self.root}\\{self.key}"

    @property
    def full_path(self) -> str:
        return f"{ROOT_NAMES[self.root]}\\{self.key}"


@dataclass(frozen=True)
class Service:
    name: str
    arguments: str
    started_on_install: bool
    deleted_on_uninstall: bool


@dataclass
class InstallLayout:
    files: dict[str, str] = field(default_factory=dict)  # long file name -> Windows directory
    registry: list[RegistryValue] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)

    @property
    def registry_keys(self) -> list[str]:
        return sorted({value.path for value in self.registry})


def _long(name: str) -> str:
    """`SHORT~1|Long Name` -> `Long Name`; the target part of `target:source`."""
    return name.split(":", 1)[0].split("|", 1)[-1]


def directories(directory_table: Table) -> dict[str, str]:
    """Every Directory row's Windows path (no trailing backslash)."""
    rows = {row["Directory"]: row for row in directory_table}
    resolved: dict[str, str] = {}

    def resolve(key: str, depth: int = 0) -> str:
        if key in resolved:
            return resolved[key]
        if key in STANDARD_FOLDERS:
            path = STANDARD_FOLDERS[key]
        elif depth > len(rows) or key not in rows:
            raise LayoutError(f"directory {key!r} cannot be resolved")
        else:
            row = rows[key]
            parent = resolve(row["Directory_Parent"], depth + 1)
            own = _long(row["DefaultDir"])
            path = parent if own in ("", ".") else f"{parent}\\{own}"
        resolved[key] = path
        return path

    for key in rows:
        resolve(key)
    return resolved


def _registry_value(raw: str, dirs: Mapping[str, str]) -> tuple[str, str | int]:
    if raw.startswith("#") and not raw.startswith(("##", "#%", "#x", "#X")):
        try:
            return "REG_DWORD", int(raw[1:])
        except ValueError:
            raise LayoutError(f"registry value {raw!r} is not an integer") from None
    if raw.startswith(("#", "[~]")):
        raise LayoutError(f"registry value {raw!r}: this kind is not checked")

    def substitute(match: re.Match[str]) -> str:
        if match.group(1) not in dirs:
            raise LayoutError(f"registry value {raw!r} refers to unknown [{match.group(1)}]")
        return dirs[match.group(1)] + "\\"

    return "REG_SZ", _REFERENCE.sub(substitute, raw)


def install_layout(tables: Mapping[str, Table]) -> InstallLayout:
    """tables: File, Component, Directory, Registry, ServiceInstall, ServiceControl."""
    dirs = directories(tables["Directory"])
    component_dir = {row["Component"]: row["Directory_"] for row in tables["Component"]}
    layout = InstallLayout()
    for row in tables["File"]:
        component = row["Component_"]
        if component not in component_dir:
            raise LayoutError(f"file {row['File']} belongs to unknown component {component}")
        layout.files[_long(row["FileName"])] = dirs[component_dir[component]]
    for row in tables["Registry"]:
        if row["Root"] not in ROOTS:
            raise LayoutError(f"registry row {row['Registry']}: root {row['Root']} not checked")
        if row["Name"] in ("+", "-", "*"):
            continue  # key creation/deletion markers, no value
        kind, value = _registry_value(row["Value"], dirs)
        key = row["Key"].rstrip("\\")
        layout.registry.append(RegistryValue(ROOTS[row["Root"]], key, row["Name"], kind, value))
    events: dict[str, int] = {}
    for row in tables["ServiceControl"]:
        events[row["Name"]] = events.get(row["Name"], 0) | int(row["Event"] or 0)
    for row in tables["ServiceInstall"]:
        event = events.get(row["Name"], 0)
        layout.services.append(
            Service(
                name=row["Name"],
                arguments=row["Arguments"],
                started_on_install=bool(event & START_ON_INSTALL),
                deleted_on_uninstall=bool(event & DELETE_ON_UNINSTALL),
            )
        )
    return layout


def parse_reg_export(text: str, key: str) -> dict[str, tuple[str, str]] | None:
    """A `reg export` file (REGEDIT5 text): value name -> (type, data) of `key` itself (a full
    path, `HKEY_LOCAL_MACHINE\\...`); None when the file has no such key."""
    values: dict[str, tuple[str, str]] | None = None
    inside = False
    for line in text.splitlines():
        if line.startswith("["):
            inside = line.strip().lower() == f"[{key}]".lower()
            if inside and values is None:
                values = {}
            continue
        if not inside or values is None:
            continue
        match = re.match(r'^(@|"((?:[^"\\]|\\.)*)")=(.*)$', line.strip())
        if not match:
            continue
        name = "" if match.group(1) == "@" else _unescape(match.group(2))
        data = match.group(3)
        if data.startswith("dword:"):
            values[name] = ("REG_DWORD", str(int(data[6:], 16)))
        elif data.startswith('"') and data.endswith('"'):
            values[name] = ("REG_SZ", _unescape(data[1:-1]))
        else:
            values[name] = ("OTHER", data)
    return values


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def value_matches(expected: RegistryValue, found: tuple[str, str]) -> bool:
    kind, data = found
    if kind != expected.kind:
        return False
    if expected.kind == "REG_DWORD":
        try:
            return int(data) == expected.value
        except ValueError:
            return False
    return data == expected.value
