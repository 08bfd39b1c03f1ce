"""Stage `vm-test` (recipes with `vm_test: true`) and what `qga-builder vm-test` runs: the
built packages installed in booted Debian guests (`agent.guest_test`), the way users install
them, before anything is published. The stage boots the systemd guest once (the .deb installed
on a running guest, the agent started by udev/systemd, its paths, the contract, the fsfreeze
hook, removal and purge); the command runs every scenario, with a reboot and an upgrade.

The old check, a busybox initramfs whose /init starts the bare agent by hand, stays as the fast
mode: `vm-test --fast`, and the stage of a run that makes no .deb."""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from builder.agent import guest_test
from builder.agent.contract_in_vm import run_vm_test
from builder.caches import arm64_guest, guest_image
from builder.errors import VmTestError
from builder.formats import package_sources
from builder.formats import service_files as sf
from builder.formats.architecture import X86_64, Architecture, debian_architecture
from builder.formats.packages import PackageFormatError, read_deb
from builder.host.cache import Cache
from builder.log import StepOutput
from builder.run_context import ContainerEngine, RunContext
from builder.stages import package


def boot_and_test(ctx: RunContext, output: StepOutput) -> None:
    """The .deb in a booted guest (scenario `systemd`, without its reboot and upgrade, which
    `vm-test` adds); a run without a .deb gets the fast check of the bare agent."""
    agents = [a for a in ctx.artifact_plans if a.kind == "static-elf"]
    if not agents:
        raise VmTestError("vm_test: the recipe has no static-elf artifact to boot")
    debs = [ctx.staging / a.name for a in ctx.artifacts if a.kind == "deb"]
    if debs:
        ctx.vm_report = guest_report(
            ctx.engine,
            ctx.cache,
            debs[0],
            None,
            ("systemd",),
            upgrade=False,
            output=output,
            reboot=False,
            arch=ctx.plan.arch,
        )
        raise_if_failed(ctx.vm_report, output)
        return
    if ctx.plan.arch.cross:  # validate refuses it; an output made otherwise is said here
        raise VmTestError(f"vm_test of an {ctx.plan.arch.name} agent needs a deb artifact")
    output.line("no .deb in this run: the fast check (the bare agent, started by hand)")
    report = run_vm_test(ctx.staging / agents[0].name, ctx.cache, output.line)
    if not report.passed:
        failed = ", ".join(s.name for s in report.scenarios if not s.passed)
        raise VmTestError(
            f"the agent failed in the VM: {failed}", hint=f"full log: {output.log_path}"
        )
    ctx.vm_report = report.as_dict() | {"mode": "initramfs"}


def raise_if_failed(report: dict[str, Any], output: StepOutput) -> None:
    if not report["passed"]:
        failed = [
            f"{s['name']}: {c['name']}: {c['detail'].splitlines()[0] if c['detail'] else ''}"
            for s in report["scenarios"]
            for c in s["checks"]
            if not c["passed"]
        ]
        raise VmTestError(
            "the packaged agent failed in the booted guest:\n  " + "\n  ".join(failed),
            hint=f"full log: {output.log_path}",
        )


def guest_report(
    engine: ContainerEngine,
    cache: Cache,
    deb: Path,
    rpm: Path | None,
    scenarios: tuple[str, ...],
    *,
    upgrade: bool,
    output: StepOutput,
    reboot: bool = True,
    arch: Architecture = X86_64,
) -> dict[str, Any]:
    """Run `scenarios` on booted guests of the agent's machine; the record the manifest keeps."""
    if arch.cross and (other := set(scenarios) - set(guest_test.FOREIGN_SCENARIOS)):
        raise VmTestError(
            f"{arch.name} guests are systemd ones: no {', '.join(sorted(other))} scenario "
            f"(choose from {', '.join(guest_test.FOREIGN_SCENARIOS)})"
        )
    exec_path = _exec_path(deb)  # (a .deb that cannot be read is said here)
    if (machine := _machine_of(deb.name, read_deb(deb).control.get("Architecture", ""))) != arch:
        raise VmTestError(
            f"{deb.name} is for {machine.name}, the output's agent for {arch.name}",
            hint="its manifest.json's architecture and the .deb disagree: rebuild the output",
        )
    with tempfile.TemporaryDirectory(prefix="qga-guest-") as scratch:
        packages = guest_test.Packages(deb=deb, rpm=rpm, exec_path=exec_path)
        if upgrade and {"systemd", "rpm"} & set(scenarios):
            packages = _with_upgrades(engine, cache, packages, Path(scratch), output)
        guests = (
            {"systemd": arm64_guest.ensure_arm64_guest(engine, cache, output)}
            if arch.cross
            else {
                init: guest_image.ensure_guest(engine, cache, init, output)
                for init in sorted({guest_test.GUEST_OF.get(name, "systemd") for name in scenarios})
            }
        )

        def run(name: str) -> guest_test.ScenarioReport:
            guest = guests[guest_test.GUEST_OF.get(name, "systemd")]
            return guest_test.run_scenario(name, guest, packages, output.line, reboot=reboot)

        # Each guest has one vCPU (see guest_vm.boot): one guest per host core at a time, the
        # longest scenarios first (so no long one starts last); reported in the order asked.
        order = sorted(scenarios, key=_longest_first)
        with ThreadPoolExecutor(max_workers=_parallel_guests(len(scenarios))) as pool:
            done = dict(zip(order, pool.map(run, order), strict=True))
        reports = [done[name] for name in scenarios]
    main = next((r for r in reports if r.boot_to_answer_seconds is not None), None)
    return {
        "mode": "guest",
        "passed": all(r.passed for r in reports),
        "installed_from": deb.name,
        "boot_to_answer_seconds": main.boot_to_answer_seconds if main else None,
        "guests": {init: g.record() for init, g in guests.items()},
        "scenarios": [r.as_dict() for r in reports],
        "scenarios_passed": [r.name for r in reports if r.passed],
        "scenarios_failed": [r.name for r in reports if not r.passed],
    }


# Measured here (TCG, one vCPU each): rpm 156 s, sysvinit 146, systemd 126, replace 57, no-port 49.
LONGEST_FIRST = ("rpm", "sysvinit", "systemd", "replace", "no-port")


def _longest_first(name: str) -> int:
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def _parallel_guests(scenarios: int) -> int:
    return max(1, min(scenarios, len(os.sched_getaffinity(0))))


def _exec_path(deb: Path) -> str:
    try:
        data = read_deb(deb).data
    except PackageFormatError as exc:
        raise VmTestError(f"{deb.name}: {exc}") from None
    agents = [path for path in data if path.startswith(("usr/sbin/", "usr/bin/"))]
    if len(agents) != 1:
        raise VmTestError(f"{deb.name}: expected one agent under /usr/sbin, found {agents}")
    return "/" + agents[0]


def _with_upgrades(
    engine: ContainerEngine,
    cache: Cache,
    packages: guest_test.Packages,
    scratch: Path,
    output: StepOutput,
) -> guest_test.Packages:
    """The same agent packaged again with a higher revision, by the packager box, as a second
    build would: what `dpkg -i` and `rpm -U` upgrade to."""
    assert packages.deb is not None
    deb = read_deb(packages.deb)
    control = deb.control
    version, _, revision = control["Version"].rpartition("-")
    exec_path = packages.exec_path
    spec = package_sources.PackageSpec(
        name=control["Package"],
        version=version,
        revision=f"{revision}.1",
        maintainer=control["Maintainer"],
        exec_path=exec_path,
        qemu_version=version.split("+")[0],
        source_date_epoch=int(deb.entries[0].mtime) if deb.entries else 0,
        fsfreeze_hook=deb.data[sf.HOOK.lstrip("/")].decode(),
        architecture=_machine_of(packages.deb.name, control.get("Architecture", "")),
    )
    output.line(f"packaging the same agent as {spec.version}-{spec.revision} for the upgrade")
    kinds = ["deb"] + (["rpm"] if packages.rpm is not None else [])
    binary = deb.data[exec_path.lstrip("/")]
    package.build_in_box(engine, cache, spec, binary, kinds, scratch, output)
    return guest_test.Packages(
        deb=packages.deb,
        rpm=packages.rpm,
        deb_upgrade=scratch / spec.deb_file,
        rpm_upgrade=scratch / spec.rpm_file if packages.rpm is not None else None,
        exec_path=exec_path,
    )


def _machine_of(deb: str, field: str) -> Architecture:
    try:
        return debian_architecture(field)
    except ValueError as exc:
        raise VmTestError(f"{deb}: Architecture {field!r}: {exc}") from None


def manifest_packages(directory: Path) -> tuple[Path | None, Path | None]:
    """The .deb and .rpm an output directory's manifest lists."""
    manifest = json.loads((directory / "manifest.json").read_text())
    found: dict[str, Path] = {}
    for artifact in manifest.get("artifacts", []):
        kind, name = artifact.get("kind"), str(artifact.get("name", ""))
        if kind in ("deb", "rpm") and "/" not in name and (directory / name).is_file():
            found[kind] = directory / name
    return found.get("deb"), found.get("rpm")
