"""The MSI installs and uninstalls, under wine in the wine box (never on the host).

In the box's fresh prefix: `msiexec /i MSI /qn /l*v`, then every file of the MSI's File table
must be in its directory with the MSI's bytes, every Registry-table value written, and each
service the MSI installs registered (its ImagePath naming the agent and the MSI's arguments) and,
if the MSI starts it, RUNNING; then `msiexec /x MSI /qn` must remove the files, the values and
the service.

Wine's limit 1: its services.exe holds a start-up lock while it auto-starts the prefix's own
services when it starts, and StartService gives up after 3 s with ERROR_SERVICE_DATABASE_LOCKED
(1055). When msiexec is the first program of a wine session, the MSI's StartServices meets that
lock and the whole install rolls back (msiexec exit 91 = 1627 & 0xff). So the session is made
persistent and settled first (a StartService of wine's own msiserver that is not refused with
1055); the MSI is then installed unchanged, its service start still fatal.

Wine's limit 2: the VSS provider's COM+ registration (custom action RegisterCom: `rundll32
qga-vss.dll,DLLCOMRegister`) cannot happen under wine: wine's rundll32 loads the DLL without
its own directory on the search path, so qga-vss.dll's libstdc++/libgcc are not found, and it
exits 0 anyway (and wine has no COM+ catalogue to register into). The check records whether the
action ran and whether the provider's COM class got registered; it does not fail on the latter.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.boxes.wine_box import DRIVE_C, WORK, WineBox
from builder.config.layout import BUILD_UID
from builder.errors import ArtifactError
from builder.formats import msi_layout
from builder.log import StepOutput

# The tables `formats.msi_layout.install_layout` reads.
TABLES = ("File", "Component", "Directory", "Registry", "ServiceInstall", "ServiceControl")
LOCKED = 1055 & 0xFF  # ERROR_SERVICE_DATABASE_LOCKED as a unix exit status
SETTLE_TRIES = 20
VSS_CLSID = "{6E6A3492-8D4D-440C-9619-5E5D0CC31CA8}"  # qga/vss-win32/vss-common.h g_szClsid
VSS_CLASS_KEY = f"HKEY_CLASSES_ROOT\\CLSID\\{VSS_CLSID}"
SERVICES_KEY = "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services"
INSTALL_LOG = "C:\\qga-msi-install.log"
UNINSTALL_LOG = "C:\\qga-msi-uninstall.log"
LOG_TO = ("/l*v", INSTALL_LOG)
REGISTER_RAN = re.compile(r"Action ended [^:]+:\d\d:\d\d: RegisterCom\. Return value 1")
RUNDLL_ERROR = re.compile(r"err:rundll32:\S+ (.*)")


def box_path(windows_path: str) -> str:
    """C:\\Program Files\\Qemu-ga -> the same place in the box's prefix."""
    if not windows_path.upper().startswith("C:"):
        raise ArtifactError(f"MSI install check: {windows_path} is not on drive C:")
    return DRIVE_C + windows_path[2:].replace("\\", "/")


def _sh(box: WineBox, argv: list[str], cwd: str = WORK) -> tuple[int, str]:
    """A Linux program in the box (no pty: wine's console wraps long lines)."""
    lines: list[str] = []
    code = box.container.run(argv, on_line=lines.append, workdir=cwd)
    return code, "\n".join(lines)


def settle_services(box: WineBox) -> int:
    """Keep one wine session for the whole check and wait until its services.exe has finished
    auto-starting (see the module's note). Returns the StartService attempts it took."""
    box.run(["timeout", "60", "wineserver", "-w"])  # the prefix-making session ends
    box.run(["wineserver", "-p"])
    for attempt in range(1, SETTLE_TRIES + 1):
        code, _ = box.run(["wine", "sc", "start", "msiserver"])
        if code != LOCKED:
            return attempt
    raise ArtifactError(
        f"MSI install check: wine's service manager stayed locked after {SETTLE_TRIES} tries"
    )


def read_log(box: WineBox, windows_path: str) -> str:
    code, text = _sh(box, ["cat", box_path(windows_path)])
    return text if code == 0 else ""


# Actions that end with "Return value 0" without failing the install: wine does not implement
# MigrateFeatureStates; INSTALL and InstallFinalize end so because another action failed.
NOT_THE_CAUSE = frozenset({"MigrateFeatureStates", "INSTALL", "InstallFinalize"})


def failed_action(log: str) -> str:
    """The first action the verbose log says returned 0 (failure)."""
    failed = re.findall(r"Action ended [^:]+:\d\d:\d\d: (\w+)\. Return value 0\.", log)
    causes = [action for action in failed if action not in NOT_THE_CAUSE]
    return causes[0] if causes else "unknown"


def export_key(box: WineBox, key: str) -> dict[str, tuple[str, str]] | None:
    """The values of one registry key (None if it does not exist), through `reg export`."""
    target = f"{WORK}/reg-export.reg"
    _sh(box, ["rm", "-f", target])
    code, _ = box.run(["wine", "reg", "export", key, "Z:" + target.replace("/", "\\"), "/y"])
    if code != 0:
        return None
    code, text = _sh(box, ["iconv", "-f", "UTF-16", "-t", "UTF-8", target])
    if code != 0:
        raise ArtifactError(f"MSI install check: cannot read the export of {key}")
    return msi_layout.parse_reg_export(text, key)


def service_state(box: WineBox, name: str) -> str:
    code, printed = box.run(["wine", "sc", "query", name])
    match = re.search(r"STATE\s*:\s*\d+\s+(\w+)", printed)
    return match.group(1) if code == 0 and match else "absent"


def installed_files(box: WineBox, layout: msi_layout.InstallLayout) -> dict[str, str]:
    """name -> sha256 of each of the MSI's files found where the MSI put it."""
    found: dict[str, str] = {}
    for name, directory in sorted(layout.files.items()):
        code, text = _sh(box, ["sha256sum", "--", f"{box_path(directory)}/{name}"])
        if code == 0 and text.split():
            found[name] = text.split()[0]
    return found


def registry_state(box: WineBox, layout: msi_layout.InstallLayout) -> tuple[list[str], list[str]]:
    """(values present as the MSI says, values missing or different), as KEY\\name."""
    present, missing = [], []
    keys = sorted({value.full_path for value in layout.registry})
    exported = {key: export_key(box, key) for key in keys}
    for value in layout.registry:
        found = (exported[value.full_path] or {}).get(value.name)
        label = f"{value.path}\\{value.name or '(Default)'}"
        if found is not None and msi_layout.value_matches(value, found):
            present.append(label)
        else:
            missing.append(f"{label} (found {found[1] if found else 'nothing'})")
    return present, missing


def check_install(
    box: WineBox,
    msi_file: Path,
    tables: Mapping[str, msi_layout.Table],
    expected: Mapping[str, str],
    output: StepOutput,
) -> dict[str, Any]:
    """Install, check, uninstall, check; return what the manifest records. expected: the
    sha256 of each file the MSI holds (from msiextract)."""
    started = time.monotonic()
    try:
        layout = msi_layout.install_layout(tables)
    except msi_layout.LayoutError as exc:
        raise ArtifactError(f"{msi_file.name}: {exc}") from None
    box.mkdir(f"{WORK}/msi")
    box.container.put_files(
        f"{WORK}/msi", {msi_file.name: msi_file.read_bytes()}, uid=BUILD_UID, gid=BUILD_UID
    )
    settle_tries = settle_services(box)
    installed = _install(box, msi_file, layout, expected, output)
    removed = _uninstall(box, msi_file, layout)
    problems = installed.problems + removed.problems
    seconds = round(time.monotonic() - started, 1)
    output.line(
        f"msi install: {len(installed.files)}/{len(layout.files)} files, "
        f"{len(installed.registry_values)} registry values, services {installed.services}; "
        f"uninstall left {len(removed.files)} files, {len(removed.registry_values)} "
        f"values; {seconds} s (service manager settled after {settle_tries} tries)"
    )
    if problems:
        raise ArtifactError(
            f"{msi_file.name} does not install and uninstall cleanly under wine: "
            + "; ".join(problems),
            hint="the check stage's log has the lines; the MSI's verbose log is in the wine box",
        )
    return {
        "under": "wine (the wine box, a fresh prefix)",
        "msiexec_install_exit": installed.exit_code,
        "files_installed": {name: layout.files[name] for name in sorted(installed.files)},
        "registry_values": installed.registry_values,
        "services": installed.services,
        "vss_register_action_ran": installed.register_ran,
        "vss_com_class_registered": installed.vss_class,
        "vss_note": "COM+ registration of qga-vss.dll cannot happen under wine "
        "(wine's rundll32 does not find the DLL's libraries; no COM+ catalogue)",
        "msiexec_uninstall_exit": removed.exit_code,
        "left_after_uninstall": {"files": 0, "registry_values": 0, "services": 0},
    }  # no times here: two builds' manifests must record the same


@dataclass
class _Looked:
    """What msiexec did and what was found after it."""

    exit_code: int
    problems: list[str]
    files: dict[str, str] = field(default_factory=dict)
    registry_values: list[str] = field(default_factory=list)
    services: dict[str, Any] = field(default_factory=dict)
    register_ran: bool = False
    vss_class: bool = False


def _install(
    box: WineBox,
    msi_file: Path,
    layout: msi_layout.InstallLayout,
    expected: Mapping[str, str],
    output: StepOutput,
) -> _Looked:
    """The MSI installed as it is (its service start stays fatal), and what it put there."""
    code, printed = box.run(
        ["env", "WINEDEBUG=err+rundll32", "wine", "msiexec", "/i", msi_file.name, "/qn", *LOG_TO],
        cwd=f"{WORK}/msi",
    )
    problems: list[str] = []
    log = read_log(box, INSTALL_LOG)
    if code != 0:
        problems.append(f"msiexec /i exited {code} (action {failed_action(log)} failed)")
        for line in log.splitlines()[-40:]:
            output.line(f"msiexec log: {line}")
    files = installed_files(box, layout)
    wrong = [name for name in layout.files if files.get(name) != expected.get(name)]
    if wrong:
        problems.append(f"files missing or not the MSI's: {', '.join(sorted(wrong))}")
    present, missing = registry_state(box, layout)
    if missing:
        problems.append(f"registry values missing: {'; '.join(missing)}")
    services: dict[str, Any] = {}
    for service in layout.services:
        values = export_key(box, f"{SERVICES_KEY}\\{service.name}") or {}
        image = values.get("ImagePath", ("", ""))[1]
        state = service_state(box, service.name)
        services[service.name] = {"image_path": image, "state": state}
        if ".exe" not in image.lower() or service.arguments not in image:
            problems.append(
                f"service {service.name}: ImagePath {image!r} is not an exe with the MSI's "
                f"arguments {service.arguments!r}"
            )
        if service.started_on_install and state != "RUNNING":
            problems.append(f"service {service.name} is {state} after the install")
    vss_class = export_key(box, VSS_CLASS_KEY) is not None
    for line in [
        *RUNDLL_ERROR.findall(printed),
        f"VSS COM class {VSS_CLSID} registered: {vss_class}",
    ]:
        output.line(f"msi install: {line.strip()}")
    return _Looked(
        code, problems, files, present, services, bool(REGISTER_RAN.search(log)), vss_class
    )


def _uninstall(box: WineBox, msi_file: Path, layout: msi_layout.InstallLayout) -> _Looked:
    """Uninstalled: everything the install put there goes."""
    code_x, _ = box.run(
        ["wine", "msiexec", "/x", msi_file.name, "/qn", "/l*v", UNINSTALL_LOG], cwd=f"{WORK}/msi"
    )
    problems: list[str] = []
    if code_x != 0:
        log_x = read_log(box, UNINSTALL_LOG)
        problems.append(f"msiexec /x exited {code_x} (action {failed_action(log_x)} failed)")
    left_files = installed_files(box, layout)
    left_values, _ = registry_state(box, layout)
    left_services = [s.name for s in layout.services if service_state(box, s.name) != "absent"]
    left_services += [
        s.name for s in layout.services if export_key(box, f"{SERVICES_KEY}\\{s.name}") is not None
    ]
    if left_files or left_values or left_services:
        problems.append(
            f"msiexec /x left files {sorted(left_files)}, registry values {left_values}, "
            f"services {sorted(set(left_services))}"
        )
    return _Looked(code_x, problems, left_files, left_values)
