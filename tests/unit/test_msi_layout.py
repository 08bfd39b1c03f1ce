"""Where an MSI says it installs things (formats.msi_layout), from tables as `msiinfo export`
writes them for QEMU's qemu-ga.wxs; and reading `reg export` files."""

from __future__ import annotations

import pytest

from builder.formats.msi import parse_table
from builder.formats.msi_layout import (
    LayoutError,
    RegistryValue,
    install_layout,
    parse_reg_export,
    value_matches,
)


def table(header: str, types: str, *rows: str) -> list[dict[str, str]]:
    name = header.split("\t")[0]
    return parse_table("\n".join([header, types, f"{name}\t{name}", *rows]) + "\n")


def qga_tables() -> dict[str, list[dict[str, str]]]:
    return {
        "Directory": table(
            "Directory\tDirectory_Parent\tDefaultDir",
            "s72\tS72\tl255",
            "qemu_ga_directory\tProgramFiles64Folder\tQemu-ga",
            "ProgramFiles64Folder\tTARGETDIR\tQEMU Guest Agent",
            "TARGETDIR\t\tSourceDir",
        ),
        "Component": table(
            "Component\tComponentId\tDirectory_\tAttributes\tCondition\tKeyPath",
            "s72\tS38\ts72\ti2\tS255\tS72",
            "qemu_ga\t{908B}\tqemu_ga_directory\t256\t\tqemu_ga.exe",
            "registry_entries\t{D075}\tqemu_ga_directory\t260\t\tregC73D",
        ),
        "File": table(
            "File\tComponent_\tFileName\tFileSize",
            "s72\ts72\tl255\ti4",
            "qemu_ga.exe\tqemu_ga\tqemu-ga.exe\t826368",
            "gspawn\tqemu_ga\tGSPAWN~1.EXE|gspawn-win64-helper.exe\t21767",
        ),
        "Registry": table(
            "Registry\tRoot\tKey\tName\tValue\tComponent_",
            "s72\ti2\tl255\tL255\tL0\ts72",
            "regA\t2\tSoftware\\QEMU\\Windows\\Tools\\QemuGA\\\tVersion\t10.2.2\tregistry_entries",
            "regB\t2\tSystem\\CurrentControlSet\\Services\\EventLog\\Application\\qemu-ga\\"
            "\tEventMessageFile\t[qemu_ga_directory]qemu-ga.exe\tregistry_entries",
            "regC\t2\tSystem\\CurrentControlSet\\Services\\QEMU Guest Agent VSS Provider\\"
            "\tVssOption\t#1\tregistry_entries",
            "regD\t2\tSoftware\\QEMU\\\t+\t\tregistry_entries",
        ),
        "ServiceInstall": table(
            "ServiceInstall\tName\tDisplayName\tServiceType\tStartType\tErrorControl"
            "\tLoadOrderGroup\tDependencies\tStartName\tPassword\tArguments\tComponent_"
            "\tDescription",
            "s72\ts255\tL255\ti4\ti4\ti4\tS255\tS255\tS255\tS255\tS255\ts72\tL255",
            "ServiceInstaller\tQEMU-GA\tQEMU Guest Agent\t16\t2\t0\t\t\tLocalSystem\t"
            "\t-d --retry-path\tqemu_ga\tQEMU Guest Agent",
        ),
        "ServiceControl": table(
            "ServiceControl\tName\tEvent\tArguments\tWait\tComponent_",
            "s72\tl255\ti2\tL255\tI2\ts72",
            "StartService\tQEMU-GA\t163\t\t1\tqemu_ga",
        ),
    }


def test_files_go_where_the_standard_folder_is_not_its_default_dir() -> None:
    layout = install_layout(qga_tables())
    assert layout.files == {
        "qemu-ga.exe": "C:\\Program Files\\Qemu-ga",
        "gspawn-win64-helper.exe": "C:\\Program Files\\Qemu-ga",
    }


def test_registry_values_resolve_directories_and_integers() -> None:
    layout = install_layout(qga_tables())
    by_name = {value.name: value for value in layout.registry}
    assert set(by_name) == {"Version", "EventMessageFile", "VssOption"}  # "+" is no value
    assert by_name["EventMessageFile"].value == "C:\\Program Files\\Qemu-ga\\qemu-ga.exe"
    assert (by_name["VssOption"].kind, by_name["VssOption"].value) == ("REG_DWORD", 1)
    assert (
        by_name["Version"].full_path == "HKEY_LOCAL_MACHINE\\Software\\QEMU\\Windows\\Tools\\QemuGA"
    )


def test_service_started_on_install_and_deleted_on_uninstall() -> None:
    (service,) = install_layout(qga_tables()).services
    assert service.name == "QEMU-GA" and service.arguments == "-d --retry-path"
    assert service.started_on_install and service.deleted_on_uninstall


@pytest.mark.parametrize(
    ("table_name", "column", "value", "message"),
    [
        ("Directory", "Directory_Parent", "Nowhere", "cannot be resolved"),
        ("Registry", "Value", "[nowhere]x", "unknown \\[nowhere\\]"),
        ("Registry", "Root", "1", "root 1 not checked"),
        ("File", "Component_", "ghost", "unknown component ghost"),
    ],
)
def test_what_is_not_understood_is_an_error(
    table_name: str, column: str, value: str, message: str
) -> None:
    tables = qga_tables()
    tables[table_name][0][column] = value
    with pytest.raises(LayoutError, match=message):
        install_layout(tables)


REG_EXPORT = """Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\QEMU-GA]
"ErrorControl"=dword:00000001
"ImagePath"="\\"C:\\\\Program Files\\\\Qemu-ga\\\\qemu-ga.exe\\" -d --retry-path"
@="default"

[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\QEMU-GA\\Security]
"Security"=hex:01,00
"""


def test_reg_export_reads_the_key_itself_not_its_subkeys() -> None:
    key = "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\QEMU-GA"
    values = parse_reg_export(REG_EXPORT, key)
    assert values == {
        "ErrorControl": ("REG_DWORD", "1"),
        "ImagePath": ("REG_SZ", '"C:\\Program Files\\Qemu-ga\\qemu-ga.exe" -d --retry-path'),
        "": ("REG_SZ", "default"),
    }
    assert parse_reg_export(REG_EXPORT, key + "\\Missing") is None


def test_value_matches_type_and_data() -> None:
    dword = RegistryValue("HKLM", "K", "VssOption", "REG_DWORD", 1)
    assert value_matches(dword, ("REG_DWORD", "1"))
    assert not value_matches(dword, ("REG_SZ", "1"))
    assert not value_matches(dword, ("REG_DWORD", "7"))
    text = RegistryValue("HKLM", "K", "Version", "REG_SZ", "10.2.2")
    assert value_matches(text, ("REG_SZ", "10.2.2"))
    assert not value_matches(text, ("REG_SZ", "10.2.1"))


def test_the_failed_action_is_not_wines_unimplemented_one() -> None:
    from builder.boxes.msi_install import box_path, failed_action

    log = "\n".join(
        [
            "Action ended 3:19:29: MigrateFeatureStates. Return value 0.",  # wine: unhandled
            "Action ended 3:19:29: InstallServices. Return value 1.",
            "Action ended 3:19:32: StartServices. Return value 0.",
            "Action ended 3:19:32: InstallFinalize. Return value 0.",
            "Action ended 3:19:32: INSTALL. Return value 0.",
        ]
    )
    assert failed_action(log) == "StartServices"
    assert failed_action("Action ended 3:19:32: INSTALL. Return value 0.") == "unknown"
    assert box_path("C:\\Program Files\\Qemu-ga").endswith("/drive_c/Program Files/Qemu-ga")
