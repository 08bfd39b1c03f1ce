"""A throw-away test VM made only from Debian packages, to run a built Linux agent where it lives.

The kernel and busybox come from pinned Debian packages (fetched with apt, checked by sha256,
unpacked here without installing anything); the initramfs holds busybox, the agent and the
virtio modules, and its /init starts the agent on the virtio-serial port named
org.qemu.guest_agent.0. The VM runs under qemu-system-x86_64 with TCG (never KVM: /dev/kvm may
exist and not work), and is always killed by its pid.
"""

from __future__ import annotations

import io
import lzma
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from builder.errors import HostToolError, VmTestError
from builder.formats.checksums import sha256_file, verify_digest
from builder.host import debian
from builder.host.cache import Cache
from builder.host.locks import exclusive
from builder.log import LineSink

AGENT_PORT = "org.qemu.guest_agent.0"
# Dependency order: no modules.dep ships in the initramfs, so /init loads them in this order.
VIRTIO_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_console",
)


@dataclass(frozen=True)
class PinnedDeb:
    package: str
    version: str
    sha256: str


@dataclass(frozen=True)
class VmAssets:
    """What the test VM is made of: Debian packages pinned by version and sha256."""

    suite: str
    kernel: PinnedDeb
    busybox: PinnedDeb


DEFAULT_ASSETS = VmAssets(
    suite="bookworm",
    kernel=PinnedDeb(
        "linux-image-6.1.0-50-amd64",
        "6.1.176-1",
        "7b5597492a0a65aee61985a492e6bcc3f2cde830072a0e3b3d8c7e1b90279bd3",
    ),
    busybox=PinnedDeb(
        "busybox-static",
        "1:1.35.0-4+deb12u1+b1",
        "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744",
    ),
)


@dataclass(frozen=True)
class PreparedVm:
    kernel: Path
    kernel_version: str
    busybox: Path
    modules: dict[str, Path]


# --- fetching and unpacking -----------------------------------------------------------------


def _deb(pin: PinnedDeb, suite: str, cache: Cache, log: LineSink) -> Path:
    dest = cache.dir("vm/debs")
    # Two runs at once (vm-test of two outputs) fetch it once: the second waits, then finds it.
    with exclusive(cache.lock_path(f"vm-deb-{pin.package}"), f"{pin.package} for the VM", log):
        for candidate in dest.glob(f"{pin.package}_*.deb"):
            if sha256_file(candidate) == pin.sha256:
                return candidate
        log(f"fetching {pin.package}={pin.version} ({suite})")
        path = debian.fetch_deb(pin.package, pin.version, suite, dest, cache.apt, log)
        verify_digest(path, pin.sha256, f"vm: {pin.package}")
        return path


def deb_members(deb: Path) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Walk the data.tar of a .deb (an ar archive) without dpkg."""
    with deb.open("rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise VmTestError(f"{deb} is not a Debian package")
        while header := handle.read(60):
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            body = handle.read(size)
            if size % 2:
                handle.read(1)
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                    for member in tar:
                        yield member, tar
                return
    raise VmTestError(f"{deb} has no data.tar")


def prepare(assets: VmAssets, cache: Cache, log: LineSink) -> PreparedVm:
    """Fetch and unpack the kernel, its virtio modules and busybox (cached by sha256)."""
    kernel_deb = _deb(assets.kernel, assets.suite, cache, log)
    busybox_deb = _deb(assets.busybox, assets.suite, cache, log)
    root = cache.dir(f"vm/unpacked/{assets.kernel.sha256[:16]}-{assets.busybox.sha256[:16]}")
    done = root / ".complete"
    with exclusive(cache.lock_path(f"vm-unpack-{root.name}"), "the VM's kernel and busybox", log):
        if not done.exists():
            _unpack(kernel_deb, busybox_deb, root, assets)
            done.write_text("ok\n")
    compressed = next(root.glob("vmlinuz-*"))
    # An uncompressed PVH vmlinux boots in about half the time of the bzImage under TCG.
    pvh = root / "vmlinux"
    kernel = pvh if pvh.exists() else compressed
    modules = {path.stem: path for path in root.glob("*.ko")}
    return PreparedVm(kernel, compressed.name.removeprefix("vmlinuz-"), root / "busybox", modules)


def _unpack(kernel_deb: Path, busybox_deb: Path, root: Path, assets: VmAssets) -> None:
    wanted = set(VIRTIO_MODULES)
    found: set[str] = set()
    kernel_found = False
    for member, tar in deb_members(kernel_deb):
        base = Path(member.name).name
        if member.isfile() and base.startswith("vmlinuz-"):
            _write(root / base, tar, member)
            kernel_found = True
        for suffix, unpack in ((".ko", False), (".ko.xz", True)):
            module = base.removesuffix(suffix)
            if member.isfile() and base.endswith(suffix) and module in wanted:
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                (root / f"{module}.ko").write_bytes(lzma.decompress(data) if unpack else data)
                found.add(module)
    missing = wanted - found
    if not kernel_found or missing:
        raise VmTestError(
            f"kernel package {assets.kernel.package}={assets.kernel.version} lacks "
            + ("its vmlinuz" if not kernel_found else "modules " + ", ".join(sorted(missing))),
            hint="pin a Debian kernel package that builds virtio as modules",
        )
    _extract_pvh_vmlinux(next(root.glob("vmlinuz-*")), root / "vmlinux")
    for member, tar in deb_members(busybox_deb):
        if member.isfile() and member.name.endswith("/bin/busybox"):
            _write(root / "busybox", tar, member)
            (root / "busybox").chmod(0o755)
            return
    raise VmTestError(f"{assets.busybox.package} has no bin/busybox")


XEN_ELFNOTE_PHYS32_ENTRY = 18


def _extract_pvh_vmlinux(bzimage: Path, dest: Path) -> None:
    """Decompress the xz payload of a bzImage; keep it only if it has a PVH entry note."""
    data = bzimage.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        return
    try:
        vmlinux = lzma.LZMADecompressor().decompress(data[start:])
    except lzma.LZMAError:
        return
    if vmlinux[:4] == b"\x7fELF" and _has_pvh_note(vmlinux):
        dest.write_bytes(vmlinux)


def _has_pvh_note(elf: bytes) -> bool:
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        p_type, _, offset, _, _, filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + index * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        at, end = offset, offset + filesz
        while at + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, at)
            name = elf[at + 12 : at + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and note_type == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _write(dest: Path, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    source = tar.extractfile(member)
    assert source is not None
    with dest.open("wb") as out:
        shutil.copyfileobj(source, out)


# --- the initramfs ---------------------------------------------------------------------------

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /bin /sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
for m in {modules}; do insmod /lib/modules/$m.ko || echo "qga-vm: insmod $m failed"; done
port=
for i in $(seq 1 200); do
    for f in /sys/class/virtio-ports/*/name; do
        [ -e "$f" ] && [ "$(cat "$f")" = "{port}" ] && port=/dev/$(basename "$(dirname "$f")")
    done
    [ -n "$port" ] && break
    sleep 0.05
done
if [ -z "$port" ]; then
    echo "qga-vm: no virtio port named {port}"; ls /sys/class/virtio-ports/ 2>&1
    sleep 3600
fi
echo "qga-vm: starting the agent on $port"
while true; do
    {agent} -m virtio-serial -p "$port" -t /run
    echo "qga-vm: agent exited with $?"
    sleep 1
done
"""


def _cpio_entry(out: io.BytesIO, name: str, mode: int, data: bytes, inode: int) -> None:
    encoded = name.encode() + b"\0"
    fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    out.write(b"070701" + b"".join(f"{value:08X}".encode() for value in fields))
    out.write(encoded + b"\0" * (-(110 + len(encoded)) % 4))
    out.write(data + b"\0" * (-len(data) % 4))


def make_initramfs(
    vm: PreparedVm,
    agent: Path,
    dest: Path,
    port: str = AGENT_PORT,
    tree: list[tuple[str, int, bytes]] | None = None,
    agent_path: str = "/sbin/qemu-ga",
) -> Path:
    """An uncompressed newc cpio (fastest to boot): busybox, the agent, modules and /init.

    With `tree` (a package's installed files: path, cpio mode, bytes), those files are laid out
    too and /init starts the agent at `agent_path`, where the package installed it."""
    init = INIT.format(modules=" ".join(VIRTIO_MODULES), port=port, agent=agent_path)
    files: list[tuple[str, int, bytes]] = [
        ("bin", 0o040755, b""),
        ("sbin", 0o040755, b""),
        ("lib", 0o040755, b""),
        ("lib/modules", 0o040755, b""),
        ("init", 0o100755, init.encode()),
        ("bin/busybox", 0o100755, vm.busybox.read_bytes()),
    ]
    if tree is None:
        files.append(("sbin/qemu-ga", 0o100755, agent.read_bytes()))
    else:
        taken = {name for name, _, _ in files}
        files += [entry for entry in tree if entry[0] not in taken]
    files += [
        (f"lib/modules/{name}.ko", 0o100644, vm.modules[name].read_bytes())
        for name in VIRTIO_MODULES
    ]
    out = io.BytesIO()
    for inode, (name, mode, data) in enumerate(files, start=1):
        _cpio_entry(out, name, mode, data, inode)
    _cpio_entry(out, "TRAILER!!!", 0, b"", 0)
    dest.write_bytes(out.getvalue())
    return dest


# --- running ---------------------------------------------------------------------------------


@dataclass
class RunningVm:
    process: subprocess.Popen[bytes]
    socket: Path
    console: Path
    started: float

    def console_tail(self, lines: int = 30) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except FileNotFoundError:
            return "(no console output)"
        return "\n".join(text.splitlines()[-lines:])


def qemu_binary(name: str = "qemu-system-x86_64", package: str = "qemu-system-x86") -> str:
    path = shutil.which(name)
    if path is None:
        raise HostToolError(
            f"{name} is not installed",
            hint=f"apt-get install --no-install-recommends {package} (or `make setup`)",
        )
    return path


@contextmanager
def boot(
    vm: PreparedVm, initramfs: Path, *, port_name: str = AGENT_PORT, memory_mb: int = 512
) -> Iterator[RunningVm]:
    """Start the VM (TCG only); kill it by pid whatever happens."""
    qemu = qemu_binary()
    # A short directory: unix socket paths are limited to 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="qgavm-", dir="/tmp"))
    socket_path = workdir / "qga.sock"
    console = workdir / "console.log"
    command = [
        qemu,
        "-machine",
        "q35,accel=tcg",
        "-cpu",
        "max",
        "-smp",
        "1",
        "-m",
        str(memory_mb),
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(vm.kernel),
        "-initrd",
        str(initramfs),
        "-append",
        "console=ttyS0 panic=-1 loglevel=4 rdinit=/init",
        "-serial",
        f"file:{console}",
        "-chardev",
        f"socket,id=qga0,path={socket_path},server=on,wait=off",
        "-device",
        "virtio-serial-pci,id=vs0",
        "-device",
        f"virtserialport,bus=vs0.0,chardev=qga0,name={port_name}",
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "qemu.log").open("wb"),
        start_new_session=True,
    )
    running = RunningVm(process, socket_path, console, time.monotonic())
    try:
        yield running
    finally:
        _kill(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()
