"""`qga-builder vm-test`: boot a built Linux agent in a VM and drive it over virtio-serial as
FIREWHEEL does, through the scenarios of the patched agent's contract.

Partial output is checked with a handshake, not sleeps: the guest command prints, marks that it
did, then waits for a file that the test creates later with another guest-exec.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder import vm
from builder.agent import AgentClient, AgentError, AgentTimeout, ExecResult
from builder.cache import Cache
from builder.errors import VmTestError
from builder.log import LineSink

BOOT_DEADLINE = 90.0
STEP_DEADLINE = 30.0


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


def _wait(
    client: AgentClient, pid: int, result: ExecResult, done: Callable[[ExecResult], bool]
) -> None:
    end = time.monotonic() + STEP_DEADLINE
    while not done(result):
        if time.monotonic() > end:
            raise AgentTimeout(f"gave up after {STEP_DEADLINE:.0f} s; so far {result}")
        client.poll(pid, result)
        time.sleep(0.05)


def _exists(client: AgentClient, path: str) -> bool:
    return client.run("/bin/sh", ["-c", f"test -e {path}"], timeout=STEP_DEADLINE).exitcode == 0


def partial_output(client: AgentClient) -> str:
    """Output (stdout and stderr) must arrive while the command still runs."""
    script = (
        "echo first; echo err-first >&2; touch /tmp/printed; "
        "while [ ! -e /tmp/go ]; do sleep 0.05; done; "
        "echo second; echo err-second >&2; exit 7"
    )
    pid = client.exec("/bin/sh", ["-c", script])
    result = ExecResult()
    end = time.monotonic() + STEP_DEADLINE
    while not _exists(client, "/tmp/printed"):
        if time.monotonic() > end:
            raise AgentTimeout("the guest command never started")
    # The command has printed and now waits: poll until its output shows up (or give up).
    for _ in range(40):
        client.poll(pid, result)
        if result.stdout == b"first\n" and result.stderr == b"err-first\n":
            break
        time.sleep(0.05)
    early_out, early_err, exited_early = result.stdout, result.stderr, result.exited
    client.run("/bin/touch", ["/tmp/go"], timeout=STEP_DEADLINE)
    _wait(client, pid, result, lambda r: r.exited)
    if exited_early:
        raise AssertionError("the command exited before it was released")
    if (early_out, early_err) != (b"first\n", b"err-first\n"):
        raise AssertionError(f"no output while running (got {early_out!r}, {early_err!r})")
    if result.stdout != b"first\nsecond\n" or result.stderr != b"err-first\nerr-second\n":
        raise AssertionError(f"output repeated or lost: {result.stdout!r} {result.stderr!r}")
    if result.exitcode != 7:
        raise AssertionError(f"exit code {result.exitcode}, expected 7")
    return f"{result.polls} polls; first lines while running; exit code 7"


def chunks_concatenate(client: AgentClient) -> str:
    """Output released in bursts spans many replies; their concatenation is the whole output."""
    script = (
        "i=0; while [ $i -lt 10 ]; do seq $((i*300)) $((i*300+299)); "
        "while [ ! -e /tmp/burst.$i ]; do sleep 0.02; done; i=$((i+1)); done"
    )
    pid = client.exec("/bin/sh", ["-c", script])
    result = ExecResult()
    replies_with_data = 0
    for burst in range(10):
        end = time.monotonic() + STEP_DEADLINE
        while result.stdout.count(b"\n") < (burst + 1) * 300:
            if time.monotonic() > end or result.exited:
                raise AssertionError(f"burst {burst} did not arrive while running")
            replies_with_data += "out-data" in client.poll(pid, result)
            time.sleep(0.02)
        client.run("/bin/touch", [f"/tmp/burst.{burst}"], timeout=STEP_DEADLINE)
    _wait(client, pid, result, lambda r: r.exited)
    expected = "".join(f"{n}\n" for n in range(3000)).encode()
    if result.stdout != expected:
        raise AssertionError("the chunks do not concatenate to the whole output")
    return f"{replies_with_data} replies carried data, {len(expected)} bytes in order"


def exit_codes(client: AgentClient) -> str:
    for code in (0, 3, 42):
        result = client.run("/bin/sh", ["-c", f"exit {code}"], timeout=STEP_DEADLINE)
        if result.exitcode != code:
            raise AssertionError(f"exit {code} reported as {result.exitcode}")
    return "0, 3, 42"


def signal_reported(client: AgentClient) -> str:
    result = client.run("/bin/sh", ["-c", "kill -TERM $$"], timeout=STEP_DEADLINE)
    if result.signal != 15 or result.exitcode is not None:
        raise AssertionError(f"signal {result.signal}, exit code {result.exitcode}")
    return "SIGTERM reported as signal 15"


def guest_info(client: AgentClient) -> str:
    info = client.execute("guest-info")
    names = {c["name"] for c in info["supported_commands"] if c.get("enabled", True)}
    missing = {"guest-exec", "guest-exec-status", "guest-sync-delimited"} - names
    if missing:
        raise AssertionError(f"missing commands: {sorted(missing)}")
    return f"version {info['version']}, {len(names)} commands"


SCENARIOS: tuple[Callable[[AgentClient], str], ...] = (
    guest_info,
    partial_output,
    chunks_concatenate,
    exit_codes,
    signal_reported,
)


def run_vm_test(
    agent: Path,
    cache: Cache,
    log: LineSink,
    *,
    assets: vm.VmAssets = vm.DEFAULT_ASSETS,
    port_name: str = vm.AGENT_PORT,
    boot_deadline: float = BOOT_DEADLINE,
) -> VmReport:
    if not agent.is_file():
        raise VmTestError(f"{agent}: no agent binary there")
    prepared = vm.prepare(assets, cache, log)
    report = VmReport(agent=str(agent), kernel=prepared.kernel_version)
    initramfs_dir = cache.dir("vm/initramfs")
    initramfs = vm.make_initramfs(
        prepared, agent, initramfs_dir / f"{agent.stat().st_ino}-{time.time_ns()}.cpio"
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
                for scenario in SCENARIOS:
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
