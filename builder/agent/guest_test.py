"""The built packages in booted Debian guests, the way users install them: `dpkg -i` (or
`rpm -i`) in the guest, and the init system and udev start the agent on its virtio port.
Nothing is started by hand: the host only talks to the agent on the port, and a scenario's
script in the guest (run at boot by the guest's scenario runner) installs, removes and looks.

Scenarios, each one boot (reboots inside it are the guest's own):
- systemd: installed on a running guest with the port, the agent starts at once (udev); it is
  the unit's MainPID, its built-in paths are the distribution's wherever the binary lies, it
  reads /etc/qemu/qemu-ga.conf, keeps the contract (output streams through guest-exec-status),
  freezes and thaws the root with the hook's scripts run; upgraded to a newer package it
  restarts on the new binary and keeps a conffile the user edited; after a reboot systemd
  starts it again; `dpkg -r` leaves no agent process, `dpkg -P` leaves the tree as before.
- no-port: installed on a guest without the port: no agent process, no restart loop.
- replace: the guest first runs Debian's own qemu-guest-agent; ours replaces it and answers.
- sysvinit: a sysvinit-core guest: the init script starts it, also at boot; remove, purge.
- rpm: the .rpm with Debian's rpm (--nodeps; its scriptlets run): start, upgrade, reboot,
  erase leaves the tree as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.agent import contract
from builder.agent.client import AgentClient, AgentError
from builder.agent.guest_scripts import FINISH, GO, LIB, scenario_script
from builder.formats import service_files as sf
from builder.host import guest_vm
from builder.log import LineSink

SCENARIOS = ("systemd", "no-port", "replace", "sysvinit", "rpm")
# The arm64 guest is a systemd one (caches/arm64_guest.py): no sysvinit guest for arm64.
FOREIGN_SCENARIOS = tuple(name for name in SCENARIOS if name != "sysvinit")
GUEST_OF = {"sysvinit": "sysvinit"}  # the others boot the systemd guest
STEP = 180.0  # a guest step under TCG (a boot, an install) gets this long


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ScenarioReport:
    name: str
    guest: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    boot_to_answer_seconds: float | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "guest": self.guest,
            "boot_to_answer_seconds": self.boot_to_answer_seconds,
            "seconds": self.seconds,
            "checks": [check.__dict__ for check in self.checks],
        }


@dataclass(frozen=True)
class Packages:
    deb: Path | None
    rpm: Path | None
    deb_upgrade: Path | None = None  # the same agent packaged with a higher version
    rpm_upgrade: Path | None = None
    exec_path: str = "/usr/sbin/qemu-ga-patched-static"


class Failed(AssertionError):
    pass


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise Failed(message)


class Session:
    """One guest boot: its agent client (reconnected as the agent restarts) and its report."""

    def __init__(
        self,
        guest: guest_vm.RunningGuest,
        report: ScenarioReport,
        log: LineSink,
        step: float = STEP,
    ):
        self.guest, self.report, self.log = guest, report, log
        self.step = step  # a guest step's time limit: STEP, longer on a slower emulated machine
        self.client: AgentClient | None = None

    def check(self, name: str, step: Callable[[], str]) -> bool:
        started = time.monotonic()
        try:
            detail = step()
            self.report.checks.append(Check(name, True, detail))
        except (Failed, AssertionError, AgentError, OSError) as exc:
            self.report.checks.append(
                Check(name, False, f"{exc}\nlast console lines:\n{self.guest.console_tail()}")
            )
        last = self.report.checks[-1]
        last.seconds = round(time.monotonic() - started, 1)
        # A failure is logged whole: the console's last lines say what the guest saw.
        shown = last.detail if not last.passed else (last.detail.splitlines() or [""])[0]
        verdict = "passed" if last.passed else "FAILED"
        self.log(f"{self.report.name}: {name}: {verdict} in {last.seconds} s: {shown}")
        return last.passed

    def answer(self, timeout: float | None = None) -> AgentClient:
        """A client the agent answers (guest-sync), connecting again while it restarts."""
        timeout = self.step if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client is None:
                    self.client = AgentClient.connect_unix(str(self.guest.socket), timeout=5)
                self.client.sync(timeout=min(10.0, max(1.0, deadline - time.monotonic())))
                return self.client
            except (AgentError, OSError) as exc:
                if self.client is not None:
                    self.client.close()
                    self.client = None
                if time.monotonic() > deadline or self.guest.process.poll() is not None:
                    raise Failed(
                        f"the agent did not answer within {timeout:.0f} s ({exc})"
                    ) from None

    def sh(self, script: str, timeout: float = 60.0) -> str:
        result = self.answer().run("/bin/sh", ["-c", script], timeout=timeout)
        out = result.stdout.decode(errors="replace")
        _expect(
            result.exitcode == 0,
            f"`{script[:80]}` exited {result.exitcode}: {out[-300:]}"
            f"{result.stderr.decode(errors='replace')[-300:]}",
        )
        return out

    def identity(self, pid_from: str) -> dict[str, str]:
        """Who answers: the guest-exec child's parent, its binary, and what the init system
        says the agent's pid is."""
        out = self.sh(
            f'echo "ppid=$PPID"; echo "exe=$(readlink /proc/$PPID/exe)"; echo "main=$({pid_from})"'
        )
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def identity_when(
        self, main: str, done: Callable[[dict[str, str]], bool], failure: str
    ) -> dict[str, str]:
        """Ask who answers every 2 s (through restarts) until `done` says so."""
        deadline = time.monotonic() + self.step
        while True:
            time.sleep(2)
            try:
                ident = self.identity(main)
            except (Failed, AgentError, OSError):
                ident = {}
            if done(ident):
                return ident
            _expect(time.monotonic() < deadline, f"{failure} (last: {ident})")

    def output_when(self, script: str, failure: str) -> str:
        """Run `script` every 2 s until it prints something; that, stripped."""
        deadline = time.monotonic() + self.step
        while True:
            with suppress(Failed, AgentError, OSError):
                if out := self.sh(script).strip():
                    return out
            _expect(time.monotonic() < deadline, failure)
            time.sleep(2)

    def detach(self, command: str, systemd: bool = True) -> None:
        """Start a command in the guest that outlives the agent (which it stops)."""
        if systemd:
            self.sh(f"systemd-run --no-block --collect --unit=qga-{int(time.time())} {command}")
        else:
            self.sh(f"setsid nohup {command} >/dev/null 2>&1 < /dev/null &")


REPLACE_RC = "/run/qga-replace.rc"
SYSTEMD_MAIN = f"systemctl show -p MainPID --value {sf.SERVICE_NAME}"
SYSV_MAIN = f"cat {sf.PID_FILE}"


def _is_ours(ident: dict[str, str], exec_path: str) -> str:
    _expect(ident.get("exe") == exec_path, f"the agent answering is {ident.get('exe')}")
    _expect(
        ident.get("ppid") == ident.get("main"),
        f"the answering agent (pid {ident.get('ppid')}) is not the service's ({ident.get('main')})",
    )
    return f"{exec_path}, pid {ident['ppid']} is the service's"


def _paths(session: Session, exec_path: str) -> str:
    out = session.sh(
        f"{exec_path} -D; echo ==; mkdir -p /opt/x && cp {exec_path} /opt/x/qemu-ga && "
        f"/opt/x/qemu-ga -D; rm -rf /opt/x; echo ==; test -e {sf.STATE_FILE} && echo state"
    )
    here, elsewhere, state = out.split("==\n")
    settings = sf.dumped_settings(here.splitlines())
    _expect(here == elsewhere, f"-D differs from /opt/x:\n{here}\n{elsewhere}")
    for key, value in sf.AGENT_PATHS.items():  # fsfreeze-hook comes from qemu-ga.conf
        _expect(settings.get(key) == value, f"{key} is {settings.get(key)}, expected {value}")
    _expect("state" in state, f"no {sf.STATE_FILE}")
    return f"statedir {sf.STATE_DIR}, hook {sf.HOOK} from {sf.CONF_FILE}, same from /opt/x"


def _contract(session: Session) -> str:
    client = session.answer()
    info = client.execute("guest-info")
    osinfo = client.execute("guest-get-osinfo")
    _expect(osinfo.get("id") == "debian", f"guest-get-osinfo says {osinfo}")
    seen = [f"{info['version']} on {osinfo.get('pretty-name')}"]
    for scenario in contract.SCENARIOS:
        seen.append(f"{scenario.__name__}: {scenario(client)}")
    return "; ".join(seen)


def _fsfreeze(session: Session) -> str:
    hook = f"{sf.HOOK_DIR}/qga-test"
    session.sh(
        f"printf '#!/bin/sh\\necho \"$1\" >> /run/qga-hook.log\\n' > {hook} && chmod 755 {hook}"
        " && rm -f /run/qga-hook.log"
    )
    client = session.answer()
    frozen = client.execute("guest-fsfreeze-freeze", timeout=60)
    status = client.execute("guest-fsfreeze-status")
    thawed = client.execute("guest-fsfreeze-thaw", timeout=60)
    after = client.execute("guest-fsfreeze-status")
    ran = session.sh(f"cat /run/qga-hook.log; rm -f {hook}").split()
    _expect(frozen >= 1 and status == "frozen", f"freeze: {frozen} file systems, {status}")
    _expect(thawed >= 1 and after == "thawed", f"thaw: {thawed} file systems, {after}")
    _expect(ran == ["freeze", "thaw"], f"the hook's scripts ran with {ran}")
    return f"{frozen} file system frozen and thawed, hook scripts ran: {' '.join(ran)}"


def _upgrade(session: Session, command: str, main: str, exec_path: str) -> str:
    before = session.identity(main)
    session.sh("echo '# kept by the upgrade' >> " + _defaults(command))
    session.detach(command)
    ident = session.identity_when(
        main,
        lambda now: now.get("main") not in (None, "", "0", before.get("main")),
        "the agent did not restart after the upgrade",
    )
    _is_ours(ident, exec_path)
    kept = session.sh(f"grep -c 'kept by the upgrade' {_defaults(command)} || true").strip()
    _expect(kept == "1", f"the edited conffile was not kept ({_defaults(command)})")
    return (
        f"restarted: pid {before.get('main')} -> {ident['main']}, on the new binary; "
        f"edited conffile kept"
    )


RPM_DEFAULTS = f"/etc/sysconfig/{sf.SERVICE_NAME}"


def _defaults(command: str) -> str:
    return RPM_DEFAULTS if "rpm" in command else f"/etc/default/{sf.SERVICE_NAME}"


def _reboot(session: Session, reboot: str, main: str, exec_path: str) -> str:
    """Reboot the guest: it shuts down, qemu ends (-no-reboot) and the machine is powered on
    again on the same disk (see guest_vm). Boot-to-answer counts from the power-on to the
    agent's first answer, so the guest's shutdown is not in it."""
    asked = time.monotonic()
    session.detach(reboot, systemd=reboot.startswith("systemctl"))
    if session.client is not None:
        session.client.close()
        session.client = None
    _expect(session.guest.wait_exit(session.step), "the guest did not shut down for its reboot")
    shutdown = time.monotonic() - asked
    session.guest.power_on()
    session.answer()
    answered = time.monotonic()
    session.report.boot_to_answer_seconds = round(answered - session.guest.started, 1)
    return (
        f"answered {session.report.boot_to_answer_seconds} s after power-on "
        f"(shutdown took {shutdown:.1f} s); " + _is_ours(session.identity(main), exec_path)
    )


def _finish(session: Session, name: str) -> str:
    if name == "sysvinit":
        session.sh(f"touch {GO}")
    else:
        session.detach("sh /run/qga-scenario/finish.sh")
    _expect(
        session.guest.wait_for("finished", session.step) is not None, "the guest did not finish"
    )
    session.guest.wait_exit(30)
    marks = session.guest.markers()
    removed = [text for word, text in marks if word == "removed"]
    diff = [text for word, text in marks if word == "diff"]
    # rpm keeps a %config file the user edited (the upgrade check edits it) as .rpmsave: the
    # user's, not ours.
    kept = [line for line in diff if line.startswith(f"> {RPM_DEFAULTS}.rpmsave ")]
    diff = [line for line in diff if line not in kept]
    _expect(removed == ["no-agent-process"], f"after removal: {removed}")
    _expect(not diff, "the tree differs from before the install:\n" + "\n".join(diff[:40]))
    return "no agent process after removal; nothing of ours left in the tree" + (
        f" (the user's edited {RPM_DEFAULTS} kept as .rpmsave, as rpm does)" if kept else ""
    )


def run_scenario(
    name: str, guest: Any, packages: Packages, log: LineSink, *, reboot: bool = True
) -> ScenarioReport:
    """Boot `guest` (a stages.guest_image.GuestImage) once for scenario `name`."""
    report = ScenarioReport(name, guest.record() | {"packages": len(guest.packages)})
    lib = f"AGENT={packages.exec_path}\n{LIB}"
    files = {"lib.sh": lib.encode(), "scenario.sh": scenario_script(name).encode()}
    # Started by systemd-run (or setsid): its output would go to the journal, not the console.
    steps = FINISH.get(name, "say finished\n")
    finish = f"exec >/dev/console 2>&1\n. /run/qga-scenario/lib.sh\n{steps}"
    files["finish.sh"] = finish.encode()
    for key, path in (
        ("v1.deb", packages.deb),
        ("v2.deb", packages.deb_upgrade),
        ("v1.rpm", packages.rpm),
        ("v2.rpm", packages.rpm_upgrade),
    ):
        if path is not None:
            files[key] = path.read_bytes()
    started = time.monotonic()
    exec_path = packages.exec_path
    with guest_vm.boot(
        guest.kernel,
        guest.initrd,
        guest.disk,
        guest_vm.payload_tar(files),
        port=name != "no-port",
        arch=guest.arch,
    ) as running:
        machine = f"{guest.arch.name} " if guest.arch.cross else ""
        log(f"{name}: booting {machine}{guest.init} guest ({guest.kernel.name}, TCG)")
        session = Session(running, report, log, STEP * guest.arch.tcg_slowdown)
        try:
            _drive(name, session, packages, exec_path, reboot)
        finally:
            if session.client is not None:
                session.client.close()
        hello = running.wait_for("hello", 1) or ""
        report.guest["booted"] = hello
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _drive(name: str, session: Session, packages: Packages, exec_path: str, reboot: bool) -> None:
    guest = session.guest
    if name == "no-port":
        session.check("no-agent-without-port", lambda: _no_port(guest, session.step))
        return
    installed = guest.wait_for("installed", session.step)
    if not session.check("installed", lambda: _installed(installed)):
        return
    if name == "replace":
        session.check("debian-agent-answers", lambda: _expect_debian(session))
        # Its exit status in a file: the old agent's removal ends dpkg's run after ours
        # starts (and answers), so the check waits for dpkg, not for the first answer.
        session.detach(f"sh -c 'dpkg -i /run/qga-scenario/v1.deb; echo $? > {REPLACE_RC}'")
        session.check("ours-replaces-it", lambda: _replaced(session, exec_path))
        session.detach("systemctl poweroff")
        return
    main = SYSV_MAIN if name == "sysvinit" else SYSTEMD_MAIN
    first = time.monotonic()
    if not session.check("starts-on-install", lambda: _is_ours(session.identity(main), exec_path)):
        return
    log_wait = round(time.monotonic() - first, 1)
    session.log(f"{name}: the agent answered {log_wait} s after the install was reported")
    if name == "systemd":
        session.check("distribution-paths", lambda: _paths(session, exec_path))
        session.check("contract", lambda: _contract(session))
        session.check("fsfreeze-hook", lambda: _fsfreeze(session))
    else:
        session.check("contract", lambda: _contract(session))
    upgrade = {"systemd": packages.deb_upgrade, "rpm": packages.rpm_upgrade}.get(name)
    if upgrade is not None:
        tool = "rpm -U --nodeps" if name == "rpm" else "dpkg -i"
        session.check(
            "upgrade",
            lambda: _upgrade(
                session,
                f"{tool} /run/qga-scenario/{'v2.rpm' if name == 'rpm' else 'v2.deb'}",
                main,
                exec_path,
            ),
        )
    if reboot:
        command = "reboot" if name == "sysvinit" else "systemctl reboot"
        session.check("starts-at-boot", lambda: _reboot(session, command, main, exec_path))
    session.check("removed-and-purged", lambda: _finish(session, name))


def _installed(text: str | None) -> str:
    _expect(text is not None, "the guest never reported the install")
    _expect(text == "0", f"the install exited with {text}")
    return "installed in the running guest"


def _no_port(guest: guest_vm.RunningGuest, step: float) -> str:
    state = guest.wait_for("state", step)
    _expect(state is not None, "the guest never reported the agent's state")
    assert state is not None
    active, restarts, processes = [*state.split(), "?", "?", "?"][:3]
    _expect(
        active == "inactive" and restarts == "0" and processes == "0",
        f"without the port: ActiveState={active}, NRestarts={restarts}, "
        f"{processes} agent processes",
    )
    guest.wait_exit(60)
    return "inactive, never restarted, no agent process"


def _expect_debian(session: Session) -> str:
    ident = session.identity(SYSTEMD_MAIN)
    _expect(ident.get("exe") == "/usr/sbin/qemu-ga", f"the agent answering is {ident}")
    return "Debian's qemu-guest-agent answers (/usr/sbin/qemu-ga)"


def _replaced(session: Session, exec_path: str) -> str:
    ident = session.identity_when(
        SYSTEMD_MAIN, lambda now: now.get("exe") == exec_path, "ours never answered"
    )
    status = session.output_when(f"cat {REPLACE_RC} 2>/dev/null || true", "dpkg -i never ended")
    _expect(status == "0", f"dpkg -i of ours over Debian's agent exited with {status}")
    state = session.sh("dpkg-query -W -f='${db:Status-Abbrev}' qemu-guest-agent || true")
    _expect(not state.startswith("ii"), f"Debian's agent is still installed ({state})")
    return _is_ours(ident, exec_path) + f"; Debian's qemu-guest-agent: {state.strip()}"
