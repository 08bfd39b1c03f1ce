"""A booted Debian guest for `vm-test`: its own kernel and initramfs, its ext4 disk (through a
qcow2 overlay of the run's own, so the cached disk never changes), a second read-only disk
holding the scenario (a tar its runner unpacks), the agent's virtio-serial port when asked for,
the serial console in a file. qemu-system-x86_64 (or, for the arm64 guest, qemu-system-aarch64's
virt machine) with TCG (KVM does not work here), killed by its pid.

A reboot in the guest ends qemu (-no-reboot) and `power_on` starts it again on the same overlay:
a power cycle. Under TCG a warm reset makes the next boot's kernel several times slower (measured
here: the agent answered 26-38 s after the reset against 15-21 s from a fresh start), a cost of
the emulator's translated code, not of the guest.

The guest reports on the console in lines `QGA-SCENARIO <word> <text>`; `markers` reads them.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import HostToolError
from builder.formats.architecture import X86_64, Architecture
from builder.host.virtual_machine import AGENT_PORT, qemu_binary

MARK = "QGA-SCENARIO "
CMDLINE = (
    "root=/dev/vda rw console={console} panic=-1 quiet systemd.firstboot=off "
    "systemd.wants=qga-scenario.service qga.scenario"
)


def payload_tar(files: Mapping[str, bytes]) -> bytes:
    """The scenario disk: a plain tar (its size a multiple of 512, as a disk's must be)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class RunningGuest:
    process: subprocess.Popen[bytes]
    socket: Path
    console: Path
    started: float
    command: list[str] = field(default_factory=list)
    qemu_log: Path | None = None
    boots: int = 1

    def power_on(self) -> None:
        """Start the machine again (after the guest powered off or rebooted) on the same disk,
        port and console."""
        if self.process.poll() is None:
            raise RuntimeError("the guest is still running")
        self.process = _start(self.command, self.qemu_log)
        self.started = time.monotonic()
        self.boots += 1

    def text(self) -> str:
        try:
            return self.console.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def markers(self) -> list[tuple[str, str]]:
        """(word, text) of every QGA-SCENARIO line the guest printed, in order."""
        found = []
        for line in self.text().splitlines():
            at = line.find(MARK)
            if at >= 0:
                word, _, rest = line[at + len(MARK) :].strip().partition(" ")
                found.append((word, rest))
        return found

    def wait_for(self, word: str, timeout: float) -> str | None:
        """The text of the first marker `word`, or None when the guest did not print it in
        time (or stopped)."""
        deadline = time.monotonic() + timeout
        while True:
            # Whether qemu has ended is asked first: a guest that prints its last marker and
            # powers off between the two questions is still read to the end.
            ended = self.process.poll() is not None
            for found, rest in self.markers():
                if found == word:
                    return rest
            if ended or time.monotonic() > deadline:
                return None
            time.sleep(0.2)

    def wait_exit(self, timeout: float) -> bool:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def console_tail(self, lines: int = 25) -> str:
        return "\n".join(self.text().splitlines()[-lines:]) or "(no console output)"


@contextmanager
def boot(
    kernel: Path,
    initrd: Path,
    disk: Path,
    payload: bytes,
    *,
    port: bool = True,
    memory_mb: int = 1024,
    arch: Architecture = X86_64,
) -> Iterator[RunningGuest]:
    """Start the guest; a reboot or poweroff in the guest ends qemu (see `power_on`)."""
    qemu = qemu_binary(arch.qemu_system, arch.qemu_system_package)
    workdir = Path(tempfile.mkdtemp(prefix="qgaguest-", dir="/tmp"))  # short: socket path
    process: subprocess.Popen[bytes] | None = None
    try:
        overlay = workdir / "disk.qcow2"
        _overlay(disk, overlay)
        (workdir / "payload.tar").write_bytes(payload)
        socket_path, console = workdir / "qga.sock", workdir / "console.log"
        command = qemu_command(qemu, kernel, initrd, workdir, port, memory_mb, arch)
        qemu_log = workdir / "qemu.log"
        process = _start(command, qemu_log)
        guest = RunningGuest(process, socket_path, console, time.monotonic(), command, qemu_log)
        yield guest
        process = guest.process
    finally:
        if process is not None and process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def qemu_command(
    qemu: str,
    kernel: Path,
    initrd: Path,
    workdir: Path,
    port: bool,
    memory_mb: int,
    arch: Architecture,
) -> list[str]:
    """The guest's qemu command line; its disk overlay, scenario disk, console and the
    agent's socket lie in `workdir`."""
    command = [
        qemu,
        # One vCPU: with two, multi-threaded TCG lets a vCPU run code the kernel is
        # patching through int3 (static keys), and the guest panics now and then at boot
        # ("Oops: int3" in CI). Scenarios run on several guests at once instead.
        *arch.qemu_machine,
        *("-smp", "1", "-m", str(memory_mb), "-nodefaults", "-display", "none"),
        *("-kernel", str(kernel), "-initrd", str(initrd)),
        *("-append", CMDLINE.format(console=arch.console)),
        *("-drive", f"file={workdir / 'disk.qcow2'},format=qcow2,if=virtio"),
        *("-drive", f"file={workdir / 'payload.tar'},format=raw,if=virtio,readonly=on"),
        # One console file for every boot of the machine (appended, never truncated).
        *("-chardev", f"file,id=console0,path={workdir / 'console.log'},append=on"),
        *("-serial", "chardev:console0"),
        "-no-reboot",
    ]
    if port:
        command += [
            *("-chardev", f"socket,id=qga0,path={workdir / 'qga.sock'},server=on,wait=off"),
            *("-device", "virtio-serial-pci,id=vs0"),
            *("-device", f"virtserialport,bus=vs0.0,chardev=qga0,name={AGENT_PORT}"),
        ]
    return command


def _start(command: list[str], qemu_log: Path | None) -> subprocess.Popen[bytes]:
    with (qemu_log or Path(os.devnull)).open("ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )


def _overlay(disk: Path, overlay: Path) -> None:
    """A qcow2 file over the cached disk: the guest's writes land there, and last across the
    machine's power cycles; the cached disk is only read."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise HostToolError(
            "qemu-img is not installed (vm-test's guest disk overlay)",
            hint="apt-get install qemu-utils (or `make setup`)",
        )
    made = subprocess.run(
        [qemu_img, "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "raw", str(overlay)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        raise HostToolError(
            f"qemu-img could not make the guest's disk overlay: {made.stderr[:300]}"
        )
