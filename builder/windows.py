"""Stage (Windows recipes): check the installer and the executable before success.

In the build container msitools exports the MSI's tables and extracts its files; here their PE
import tables are read, the MSI is checked to hold exactly the DLLs needed (see `msi.check`),
and the shipped qemu-ga.exe runs `--version` under wine with the DLLs from the MSI beside it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder import archives, msi, msifix, steps, wine
from builder.checksums import sha256_file
from builder.engine import BuildContainer
from builder.errors import ArtifactError
from builder.layout import Layout
from builder.log import StepOutput
from builder.pe import PeFormatError, PeInfo, read_pe
from builder.plan import ArtifactPlan

TABLES = ("File", "ServiceInstall", "CustomAction", "Property")
AMD64 = 0x8664

RunStep = Callable[[steps.Command, StepOutput, str], list[str]]


def check_pe(path: Path, name: str) -> PeInfo:
    try:
        info = read_pe(path)
    except PeFormatError as exc:
        raise ArtifactError(f"artifact {name}: {exc}") from None
    if info.machine != AMD64:
        raise ArtifactError(f"artifact {name}: machine {info.machine:#x}, expected x86-64")
    return info


def verify_msi(
    artifact: ArtifactPlan,
    staging: Path,
    box: BuildContainer,
    layout: Layout,
    run_step: RunStep,
    output: StepOutput,
    qemu_version: str,
    codes: msifix.Codes,
    epoch: int,
) -> dict[str, Any]:
    """Check one MSI, then make it reproducible; return what the manifest records of it."""
    run_step(steps.inspect_msi(layout, artifact.name, TABLES), output, "verify")
    with tempfile.TemporaryDirectory(prefix="qga-msi-") as scratch:
        root = Path(scratch)
        archives.safe_extract(box.get_archive(f"{layout.root}/inspect"), root, what="MSI contents")
        inspect = root / "inspect"
        tables = {t: msi.parse_table((inspect / f"{t}.idt").read_text()) for t in TABLES}
        extracted = {p.name: p for p in (inspect / "files").rglob("*") if p.is_file()}
        pe_infos: dict[str, PeInfo] = {}
        for name, path in extracted.items():
            if name.lower().endswith((".exe", ".dll")):
                try:
                    pe_infos[name] = read_pe(path)
                except PeFormatError as exc:
                    output.line(f"{name}: {exc}")
        result = msi.check(
            tables["File"], tables["ServiceInstall"], tables["CustomAction"], pe_infos
        )
        for name in result.files:
            imports = ", ".join(pe_infos[name].imports) if name in pe_infos else "-"
            output.line(f"  {name}: imports {imports}")
        if not result.ok:
            raise ArtifactError(
                f"artifact {artifact.name} is not what the agent needs: "
                + "; ".join(result.problems)
            )
        output.line(
            f"{artifact.name}: {len(result.files)} files, every DLL needed and used, "
            f"service {msi.SERVICE_NAME}, VSS registration present"
        )
        properties = {row["Property"]: row["Value"] for row in tables["Property"]}
        msifix.make_reproducible(staging / artifact.name, codes, properties["ProductCode"], epoch)
        output.line(
            f"{artifact.name}: ProductCode {codes.product}, PackageCode {codes.package}, "
            f"times {epoch} (UpgradeCode {properties.get('UpgradeCode')} kept)"
        )
        agent = extracted.get(msi.AGENT_EXE)
        assert agent is not None  # msi.check guarantees it
        shipped_exe = staging / msi.AGENT_EXE
        if shipped_exe.is_file() and sha256_file(shipped_exe) != sha256_file(agent):
            raise ArtifactError(f"{msi.AGENT_EXE} in the output differs from the one in the MSI")
        printed = run_version(agent.parent, output)
        if qemu_version not in printed:
            raise ArtifactError(
                f"{msi.AGENT_EXE} --version under wine printed {printed.strip()[-200:]!r}, "
                f"expected QEMU version {qemu_version}"
            )
        return {
            "files": {name: sha256_file(path) for name, path in sorted(extracted.items())},
            "dlls_needed": result.reached,
            "service": msi.SERVICE_NAME,
            "product_code": codes.product,
            "package_code": codes.package,
            "upgrade_code": properties.get("UpgradeCode"),
        }


def run_version(directory: Path, output: StepOutput) -> str:
    """qemu-ga.exe --version under wine (under a pty), from the directory with its DLLs."""
    with wine.prefix() as box:
        code, printed = box.run([str(directory / msi.AGENT_EXE), "--version"], cwd=directory)
    for line in printed.splitlines():
        output.line(f"wine: {line}")
    if code != 0:
        raise ArtifactError(f"{msi.AGENT_EXE} --version under wine exited with {code}")
    return printed
