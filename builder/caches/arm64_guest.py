"""The booted arm64 guest `vm-test` installs arm64 packages into: Debian trixie for arm64 with
the distribution's kernel and initramfs, systemd and udev, made without running anything arm64
on the host (no binfmt_misc registration, no qemu-user).

Two halves. The image `qga-builder/guest-arm64` (assets/Dockerfile.guest-arm64, an x86-64
container) holds the tree after `debootstrap --foreign` (packages downloaded and unpacked, none
configured) with the test's files, and a busybox initramfs for the second stage. Its tree
becomes an ext4 disk (mkfs.ext4 -d, as for the x86-64 guests), and the disk boots once under
qemu-system-aarch64 (TCG) to run debootstrap's second stage: the maintainer scripts, the
initramfs, the masks. The finished disk, kernel, initramfs and package list are cached under
the image's id (the recorded key); that boot takes tens of minutes under TCG, so it is made
once per image. A failed attempt leaves the cache as it was: everything is made beside the
entry and renamed into place when complete.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from builder.boxes.tool_box import ASSETS, ToolBox
from builder.caches.guest_image import GuestImage, entry_complete, read_packages
from builder.engine import LABEL_RECIPE
from builder.errors import ImageError
from builder.formats import archives
from builder.formats.architecture import AARCH64
from builder.formats.checksums import parse_sha256sums, sha256_file
from builder.host.cache import Cache
from builder.host.locks import exclusive
from builder.host.virtual_machine import qemu_binary
from builder.log import StepOutput
from builder.run_context import ContainerEngine

BOX = ToolBox(
    "guest-arm64",
    ASSETS / "Dockerfile.guest-arm64",
    # As the x86-64 systemd guest's (caches/guest_image.py), for arm64; busybox-static makes
    # the second stage's initramfs; Debian's qemu-guest-agent is kept as a .deb for `replace`.
    (
        "systemd",
        "systemd-sysv",
        "udev",
        "linux-image-arm64",
        "initramfs-tools",
        "zstd",
        "e2fsprogs",
        "libarchive13t64",
        "procps",
        "kmod",
        "rpm",
        "qemu-guest-agent",
        "busybox-static",
    ),
    memory="2g",
)
OUT = "/qga-image/out"
STAGE2_FILES = ("disk.img", "vmlinuz", "init.cpio")
MAX_DISK_BYTES = 4 << 30
MAX_BOOT_BYTES = 512 << 20  # the second stage's tar of /boot and the package list
# Measured here: 1532 s with the host busy with builds; a guest that has not finished in
# this long is stuck.
STAGE2_TIMEOUT = 5400.0
STAGE2_MEMORY_MB = 2048
# The tree as an ext4 disk with room for what the second stage adds (the initramfs, dpkg's
# database), and the second stage's kernel and initramfs beside it.
MAKE_DISK = f"""\
mkdir -p {OUT}
size=$(( $(du -sm /guest | cut -f1) * 15 / 10 + 768 ))
mkfs.ext4 -q -F -L qga-root -d /guest {OUT}/disk.img "${{size}}M"
cp /stage2/vmlinuz /stage2/init.cpio {OUT}/
cd {OUT} && sha256sum -- * > /qga-image/SHA256SUMS && mv /qga-image/SHA256SUMS {OUT}/
"""


def ensure_arm64_guest(engine: ContainerEngine, cache: Cache, output: StepOutput) -> GuestImage:
    """The arm64 systemd guest's disk, kernel and initramfs: cached, or made now."""
    image = BOX.image(engine, cache, output)
    key = image.image_id
    entry = cache.dir("vm/guests") / f"systemd-arm64-{key.removeprefix('sha256:')[:24]}"
    with exclusive(cache.lock_path(f"guest-{entry.name}"), f"guest {entry.name}", output.line):
        if not entry_complete(entry, key):
            _make(engine, key, entry, output)
        else:
            output.line(f"reusing the arm64 guest disk {entry} (image {key[:19]})")
    return GuestImage("systemd", key, entry, read_packages(entry / "packages.txt"), AARCH64)


def _make(engine: ContainerEngine, image_id: str, entry: Path, output: StepOutput) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=entry.parent))
    try:
        first = staging / "first"
        _first_half(engine, image_id, first, output)
        done = staging / "out"
        done.mkdir()
        _second_stage(first, done, output)
        (first / "disk.img").rename(done / "disk.img")
        (done / ".complete").write_text(image_id + "\n")
        if entry.exists():  # an entry of ours, made from an older image or left incomplete
            shutil.rmtree(entry)
        done.rename(entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    output.line(f"arm64 guest disk ready: {entry}")


def _first_half(engine: ContainerEngine, image_id: str, dest: Path, output: StepOutput) -> None:
    """The unconfigured tree as a disk, with the second stage's kernel and initramfs."""
    output.line(f"making the arm64 guest disk from {image_id[:19]} (mkfs.ext4 -d of its tree)")
    with engine.container(
        image_id,
        labels={LABEL_RECIPE: "guest-disk"},
        user="root",  # to read every file of the tree: DAC_READ_SEARCH, no other capability
        network=False,
        memory="2g",
        cap_add=("DAC_READ_SEARCH",),
    ) as box:
        code = box.run(["sh", "-euc", MAKE_DISK], on_line=output.line)
        if code != 0:
            raise ImageError(
                f"the arm64 guest disk could not be made (exit {code})\n{output.tail_text()}",
                hint=f"full log: {output.log_path}",
            )
        archives.safe_extract(
            box.get_archive(OUT),
            dest.parent / "extract",
            what="the arm64 guest disk",
            limits=archives.Limits(max_bytes=MAX_DISK_BYTES, max_members=len(STAGE2_FILES) + 2),
        )
    (dest.parent / "extract" / "out").rename(dest)
    sums = parse_sha256sums((dest / "SHA256SUMS").read_text())
    for name in STAGE2_FILES:  # what came out of the container is what was made in it
        path = dest / name
        if not path.is_file() or sums.get(name) != sha256_file(path):
            raise ImageError(f"the arm64 guest's {name} is missing or changed on the way out")


def _second_stage(first: Path, done: Path, output: StepOutput) -> None:
    """Boot the disk once under qemu-system-aarch64: debootstrap's second stage and the rest
    of /qga-stage2.sh run in the guest, which writes /boot and its package list to a second
    disk as a tar and powers off."""
    qemu = qemu_binary(AARCH64.qemu_system, AARCH64.qemu_system_package)
    result = first / "result.tar"
    with result.open("wb") as handle:
        handle.truncate(MAX_BOOT_BYTES)
    console = first / "console.log"
    command = [
        qemu,
        *AARCH64.qemu_machine,
        *("-smp", "1", "-m", str(STAGE2_MEMORY_MB), "-nodefaults", "-display", "none"),
        *("-kernel", str(first / "vmlinuz"), "-initrd", str(first / "init.cpio")),
        *("-append", f"console={AARCH64.console} rdinit=/init panic=-1 loglevel=4"),
        *("-drive", f"file={first / 'disk.img'},format=raw,if=none,id=root"),
        *("-device", "virtio-blk-pci,drive=root"),
        *("-drive", f"file={result},format=raw,if=none,id=result"),
        *("-device", "virtio-blk-pci,drive=result"),
        *("-serial", f"file:{console}"),
        "-no-reboot",
    ]
    output.line(
        "running debootstrap's second stage in the arm64 guest (qemu-system-aarch64, TCG; "
        "tens of minutes, once per guest image)"
    )
    started = time.monotonic()
    qemu_log = first / "qemu.log"
    with qemu_log.open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        _wait(process, console, started, output)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    text = console.read_bytes().decode("utf-8", errors="replace")
    if process.returncode != 0 or "QGA-STAGE2 rc=0" not in text:
        kept = _keep_logs(console, qemu_log, output)
        raise ImageError(
            f"the arm64 guest's second stage failed (qemu exit {process.returncode})\n"
            f"console:\n{_tail(console)}\nqemu:\n{_tail(qemu_log, 10)}",
            hint=f"console and qemu logs: {kept}",
        )
    output.line(f"second stage done in {time.monotonic() - started:.0f} s")
    unpacked = first / "result"
    with result.open("rb") as handle:
        archives.safe_extract(
            handle,
            unpacked,
            what="the arm64 guest's /boot",
            limits=archives.Limits(max_bytes=MAX_BOOT_BYTES, max_members=64),
        )
    _take(unpacked / "boot", "vmlinuz-", done / "vmlinuz")
    _take(unpacked / "boot", "initrd.img-", done / "initrd.img")
    _take(unpacked, "qga-packages.txt", done / "packages.txt")


def _wait(
    process: subprocess.Popen[bytes], console: Path, started: float, output: StepOutput
) -> None:
    """Until qemu ends (the guest powers off), saying every two minutes where it is."""
    report = started + 120
    while process.poll() is None:
        now = time.monotonic()
        if now - started > STAGE2_TIMEOUT:
            raise ImageError(
                f"the arm64 guest's second stage did not end in {STAGE2_TIMEOUT:.0f} s\n"
                + _tail(console),
                hint=f"full log: {output.log_path}",
            )
        if now >= report:
            output.line(f"second stage: {now - started:.0f} s; console: {_tail(console, 1)}")
            report += 120
        time.sleep(2)


def _keep_logs(console: Path, qemu_log: Path, output: StepOutput) -> Path:
    """The failed second stage's console and qemu logs, kept beside the step's log (the
    staging directory they were written in goes)."""
    kept = output.log_path.parent
    for log in (console, qemu_log):
        if log.is_file():
            shutil.copyfile(log, kept / f"arm64-guest-{log.name}")
    return kept


def _take(directory: Path, prefix: str, dest: Path) -> None:
    found = sorted(directory.glob(f"{prefix}*")) if directory.is_dir() else []
    if len(found) != 1:
        raise ImageError(
            f"the arm64 guest's second stage wrote {len(found)} {prefix}* files, not one"
        )
    found[0].rename(dest)


def _tail(console: Path, lines: int = 25) -> str:
    try:
        text = console.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return "(no console output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no console output)"
