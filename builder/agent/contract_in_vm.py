"""Boot a built Linux agent in a throw-away VM and run the agent contract (`agent.contract`)
over virtio-serial, as FIREWHEEL drives it; the report says what passed."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.agent import contract
from builder.agent.client import AgentClient, AgentError
from builder.errors import VmTestError
from builder.host import virtual_machine as vm
from builder.host.cache import Cache
from builder.log import LineSink

BOOT_DEADLINE = 90.0


@dataclass
class Scenario:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class VmReport:
    agent: str
    kernel: str
    boot_to_answer_seconds: float = 0.0
    agent_version: str = ""
    scenarios: list[Scenario] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.scenarios) and all(s.passed for s in self.scenarios)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["scenarios_passed"] = [s.name for s in self.scenarios if s.passed]
        data["scenarios_failed"] = [s.name for s in self.scenarios if not s.passed]
        return data


def run_vm_test(
    agent: Path,
    cache: Cache,
    log: LineSink,
    *,
    assets: vm.VmAssets = vm.DEFAULT_ASSETS,
    port_name: str = vm.AGENT_PORT,
    boot_deadline: float = BOOT_DEADLINE,
    tree: list[tuple[str, int, bytes]] | None = None,
    agent_path: str = "/sbin/qemu-ga",
) -> VmReport:
    if not agent.is_file():
        raise VmTestError(f"{agent}: no agent binary there")
    prepared = vm.prepare(assets, cache, log)
    report = VmReport(agent=str(agent), kernel=prepared.kernel_version)
    initramfs_dir = cache.dir("vm/initramfs")
    initramfs = vm.make_initramfs(
        prepared,
        agent,
        initramfs_dir / f"{agent.stat().st_ino}-{time.time_ns()}.cpio",
        tree=tree,
        agent_path=agent_path,
    )
    try:
        with vm.boot(prepared, initramfs, port_name=port_name) as running:
            log(f"booting {prepared.kernel_version} (TCG), agent socket {running.socket}")
            try:
                client = AgentClient.connect_unix(str(running.socket), timeout=10)
                client.sync(timeout=boot_deadline)
            except (AgentError, OSError) as exc:
                raise VmTestError(
                    f"the agent in the VM did not answer within {boot_deadline:.0f} s ({exc}); "
                    f"last console lines:\n{running.console_tail()}",
                    hint="check the port name and that the agent is a static Linux binary",
                ) from None
            report.boot_to_answer_seconds = round(time.monotonic() - running.started, 2)
            report.agent_version = client.execute("guest-info")["version"]
            log(
                f"agent {report.agent_version} answered {report.boot_to_answer_seconds} s "
                "after start"
            )
            with client:
                for scenario in contract.SCENARIOS:
                    try:
                        detail = scenario(client)
                        report.scenarios.append(Scenario(scenario.__name__, True, detail))
                    except (AssertionError, AgentError) as exc:
                        report.scenarios.append(Scenario(scenario.__name__, False, str(exc)))
                    outcome = "passed" if report.scenarios[-1].passed else "FAILED"
                    log(f"{scenario.__name__}: {outcome}: {report.scenarios[-1].detail}")
    finally:
        initramfs.unlink(missing_ok=True)
    return report
