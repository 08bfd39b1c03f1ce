"""Stage `vm-test` (recipes with `vm_test: true`): boot the built static agent in a throw-away
VM and run the agent contract over virtio-serial before anything is published."""

from __future__ import annotations

from builder.agent.contract_in_vm import run_vm_test
from builder.errors import VmTestError
from builder.log import StepOutput
from builder.stages.context import RunContext


def boot_and_test(ctx: RunContext, output: StepOutput) -> None:
    agents = [a for a in ctx.plan.artifacts if a.kind == "static-elf"]
    if not agents:
        raise VmTestError("vm_test: the recipe has no static-elf artifact to boot")
    report = run_vm_test(ctx.staging / agents[0].name, ctx.cache, output.line)
    if not report.passed:
        failed = ", ".join(s.name for s in report.scenarios if not s.passed)
        raise VmTestError(
            f"the agent failed in the VM: {failed}", hint=f"full log: {output.log_path}"
        )
    ctx.vm_report = report.as_dict()
