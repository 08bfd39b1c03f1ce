"""Stage `check`: every artifact is what its kind promises, before anything is published.

- static-elf: the recipe's machine (x86-64 or AArch64), no PT_INTERP, no DT_NEEDED, stripped
  when asked, and `--version` (run in the build container, never on the host; an aarch64 agent
  through qemu-aarch64 there) prints the source's QEMU version;
- pe: a PE file for x86-64;
- msi: msitools (in the build container) exports the MSI's tables and extracts its files; their
  PE import tables must show that the MSI holds exactly the DLLs needed (`formats.msi.check`),
  and the shipped qemu-ga.exe runs `--version` under wine, in the wine box (a container of
  the tool's own, never on the host), with the MSI's DLLs beside it; then, in the same box,
  the MSI installs and uninstalls cleanly (`msi_install`), and the manifest records how.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from builder.boxes import container_commands, msi_install, wine_box
from builder.config.plan import ArtifactPlan
from builder.errors import ArtifactError
from builder.formats import archives, msi
from builder.formats import service_files as sf
from builder.formats.checksums import sha256_file
from builder.formats.elf import ElfFormatError, read_elf
from builder.formats.pe import PeFormatError, PeInfo, read_pe
from builder.log import StepOutput
from builder.run_context import RunContext

BASE_TABLES = ("File", "ServiceInstall", "CustomAction", "Property")
TABLES = tuple(dict.fromkeys((*BASE_TABLES, *msi_install.TABLES)))
AMD64 = 0x8664


def check(ctx: RunContext, output: StepOutput) -> None:
    for artifact in ctx.artifact_plans:
        path = ctx.staging / artifact.name
        if artifact.kind == "static-elf":
            detail = check_static_elf(ctx, artifact, path, output)
        elif artifact.kind == "pe":
            detail = check_pe(path, artifact.name).describe()
        elif artifact.kind == "msi":
            contents = check_msi(ctx, artifact, output)
            ctx.msi_contents[artifact.name] = contents
            detail = f"MSI with {len(contents['files'])} files"
        else:
            continue
        output.line(f"{artifact.name}: {detail}")
        ctx.artifacts = [
            dataclasses.replace(known, detail=detail) if known.name == artifact.name else known
            for known in ctx.artifacts
        ]


def check_static_elf(
    ctx: RunContext, artifact: ArtifactPlan, path: Path, output: StepOutput
) -> str:
    try:
        elf = read_elf(path)
    except ElfFormatError as exc:
        raise ArtifactError(f"artifact {artifact.name}: {exc}") from None
    problems = []
    arch = ctx.plan.arch
    if elf.machine != arch.elf_machine:
        problems.append(
            f"is built for ELF machine {elf.machine}, not {arch.elf_machine_name} "
            f"({arch.elf_machine}; architecture {arch.name})"
        )
    if elf.interpreter:
        problems.append(f"asks for the dynamic loader {elf.interpreter}")
    if elf.needed:
        problems.append(f"needs {len(elf.needed)} shared libraries")
    if artifact.strip and not elf.is_stripped:
        problems.append("is not stripped")
    if problems:
        raise ArtifactError(f"artifact {artifact.name} {' and '.join(problems)}")
    command = container_commands.version(ctx.layout, artifact.name, arch.runner)
    printed = "".join(ctx.run_step(command, output))
    if ctx.qemu_version not in printed:
        raise ArtifactError(
            f"artifact {artifact.name} --version printed {printed!r}, "
            f"expected QEMU version {ctx.qemu_version}"
        )
    ctx.agent_paths = check_agent_paths(ctx, artifact, output)
    # The default machine's detail stays as it always read; another machine's says which.
    return f"{elf.describe()}, {arch.elf_machine_name}" if arch.cross else elf.describe()


def check_agent_paths(ctx: RunContext, artifact: ArtifactPlan, output: StepOutput) -> dict:
    """The agent's built-in paths (`-D -F`, run in the build container) are the same wherever
    its binary lies; a recipe that ships service files or packages needs the distribution's."""
    command = container_commands.agent_paths(ctx.layout, artifact.name, ctx.plan.arch.runner)
    lines = ctx.run_step(command, output)
    sections: list[list[str]] = []  # one per place the agent ran from
    for line in lines:
        if line.startswith(container_commands.PATHS_MARK):
            sections.append([])
        elif sections:
            sections[-1].append(line)
    if len(sections) != 2:
        raise ArtifactError(f"artifact {artifact.name} -D printed no settings")
    settings = [sf.dumped_settings(section) for section in sections]
    paths = {key: value for key, value in settings[0].items() if key in sf.AGENT_PATHS}
    if not paths:
        raise ArtifactError(f"artifact {artifact.name} -D printed no settings")
    moved = sorted(k for k in sf.AGENT_PATHS if settings[0].get(k) != settings[1].get(k))
    if moved:
        raise ArtifactError(
            f"artifact {artifact.name}: its built-in paths move with the binary ("
            + ", ".join(
                f"{k}: {settings[0].get(k)} here, {settings[1].get(k)} elsewhere" for k in moved
            )
            + ")",
            hint="configure with --prefix=/usr --sysconfdir=/etc --localstatedir=/var",
        )
    if ctx.plan.package is not None or ctx.plan.service_kinds:
        wrong = sorted(k for k, want in sf.AGENT_PATHS.items() if paths.get(k) != want)
        if wrong:
            raise ArtifactError(
                f"artifact {artifact.name}: the packages and service files expect "
                + ", ".join(f"{k}={sf.AGENT_PATHS[k]}" for k in wrong)
                + ", the agent has "
                + ", ".join(f"{k}={paths.get(k)}" for k in wrong),
                hint="configure with --prefix=/usr --sysconfdir=/etc --localstatedir=/var",
            )
    output.line(
        f"{artifact.name}: built-in paths fixed: "
        + ", ".join(f"{k}={v}" for k, v in sorted(paths.items()))
    )
    return paths


def check_pe(path: Path, name: str) -> PeInfo:
    try:
        info = read_pe(path)
    except PeFormatError as exc:
        raise ArtifactError(f"artifact {name}: {exc}") from None
    if info.machine != AMD64:
        raise ArtifactError(f"artifact {name}: machine {info.machine:#x}, expected x86-64")
    return info


def check_msi(ctx: RunContext, artifact: ArtifactPlan, output: StepOutput) -> dict[str, Any]:
    """Check one MSI; return what the manifest records of it (post-processing adds codes)."""
    layout = ctx.layout
    ctx.run_step(container_commands.inspect_msi(layout, artifact.name, TABLES), output)
    with tempfile.TemporaryDirectory(prefix="qga-msi-") as scratch:
        root = Path(scratch)
        archives.safe_extract(
            ctx.container.get_archive(layout.inspect),
            root,
            what="MSI contents",
            limits=archives.Limits(max_bytes=4 * ctx.plan.max_artifact_bytes, max_members=4096),
        )
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
        ctx.built_product_codes[artifact.name] = properties["ProductCode"]
        agent = extracted.get(msi.AGENT_EXE)
        assert agent is not None  # msi.check guarantees it
        for shipped in shipped_agents(ctx):
            if sha256_file(ctx.staging / shipped.name) != sha256_file(agent):
                raise ArtifactError(
                    f"{shipped.name} ({shipped.path}) in the output differs from the "
                    f"{msi.AGENT_EXE} in the MSI"
                )
        files = {name: sha256_file(path) for name, path in sorted(extracted.items())}
        with wine_box.wine_box(ctx.engine, ctx.cache, output) as box:
            printed = run_version(box, agent.parent, output)
            if ctx.qemu_version not in printed:
                raise ArtifactError(
                    f"{msi.AGENT_EXE} --version under wine printed {printed.strip()[-200:]!r}, "
                    f"expected QEMU version {ctx.qemu_version}"
                )
            install = msi_install.check_install(
                box, ctx.staging / artifact.name, tables, files, output
            )
        return {
            "files": files,
            "dlls_needed": result.reached,
            "service": msi.SERVICE_NAME,
            "install_check": install,
            "upgrade_code": properties.get("UpgradeCode"),
        }


def shipped_agents(ctx: RunContext) -> list[ArtifactPlan]:
    """The pe artifacts that are the agent the MSI ships (built as qemu-ga.exe), whatever
    name they are published under (collect has put each in the staging directory)."""
    return [
        artifact
        for artifact in ctx.artifact_plans
        if artifact.kind == "pe" and PurePosixPath(artifact.path).name == msi.AGENT_EXE
    ]


def run_version(box: wine_box.WineBox, directory: Path, output: StepOutput) -> str:
    """qemu-ga.exe --version under wine in the wine box, beside the MSI's DLLs."""
    box.mkdir(f"{wine_box.WORK}/agent")
    box.put_directory(directory, f"{wine_box.WORK}/agent")
    code, printed = box.run(
        ["wine", f"{wine_box.WORK}/agent/{msi.AGENT_EXE}", "--version"],
        cwd=f"{wine_box.WORK}/agent",
    )
    for line in printed.splitlines():
        output.line(f"wine: {line}")
    if code != 0:
        raise ArtifactError(f"{msi.AGENT_EXE} --version under wine exited with {code}")
    return printed
