"""Stage `vm-test` (recipes with `vm_test: true`): boot the built static agent in a throw-away
VM and run the agent contract over virtio-serial before anything is published.

When the run made a .deb, the VM's initramfs carries the package's installed file tree and the
agent is started from where the package puts it (e.g. /usr/sbin/qemu-ga-patched-static), so the
test covers the packaged agent and its path, not only the bare binary."""

from __future__ import annotations

from typing import Any

from builder.agent.contract_in_vm import run_vm_test
from builder.errors import VmTestError
from builder.formats.packages import PackageFormatError, read_deb
from builder.log import StepOutput
from builder.stages.context import RunContext

CPIO_DIR, CPIO_FILE = 0o040000, 0o100000


def boot_and_test(ctx: RunContext, output: StepOutput) -> None:
    agents = [a for a in ctx.artifact_plans if a.kind == "static-elf"]
    if not agents:
        raise VmTestError("vm_test: the recipe has no static-elf artifact to boot")
    installed: dict[str, Any] = {}
    debs = [a for a in ctx.artifacts if a.kind == "deb"]
    if debs:
        installed = _deb_tree(ctx, debs[0].name)
        output.line(f"the VM starts the agent from {debs[0].name}: {installed['agent_path']}")
    report = run_vm_test(
        ctx.staging / agents[0].name,
        ctx.cache,
        output.line,
        tree=installed.get("tree"),
        agent_path=installed.get("agent_path", "/sbin/qemu-ga"),
    )
    if not report.passed:
        failed = ", ".join(s.name for s in report.scenarios if not s.passed)
        raise VmTestError(
            f"the agent failed in the VM: {failed}", hint=f"full log: {output.log_path}"
        )
    ctx.vm_report = report.as_dict()
    if debs:
        ctx.vm_report["installed_from"] = {
            "package": debs[0].name,
            "agent_path": installed["agent_path"],
        }


def _deb_tree(ctx: RunContext, name: str) -> dict[str, Any]:
    """The .deb's data tree as initramfs entries, and where it installs the agent."""
    from builder.stages.package import DEFAULT_EXEC_PATH

    try:
        deb = read_deb(ctx.staging / name)
    except PackageFormatError as exc:
        raise VmTestError(f"{name}: {exc}") from None
    tree = []
    for entry in deb.entries:
        if not entry.path:
            continue
        if entry.kind == "dir":
            tree.append((entry.path, CPIO_DIR | (entry.mode & 0o7777), b""))
        elif entry.kind == "file":
            tree.append((entry.path, CPIO_FILE | (entry.mode & 0o7777), deb.data[entry.path]))
    agent_path = ctx.plan.service_exec_path or DEFAULT_EXEC_PATH
    if agent_path.lstrip("/") not in deb.data:
        raise VmTestError(f"{name} does not install the agent at {agent_path}")
    return {"tree": tree, "agent_path": agent_path}
