"""The booted guest `vm-test` installs the built packages into: Debian trixie with the
distribution's kernel and initramfs, systemd and udev (or sysvinit), made as an image of the
tool's own from the debootstrapped base (so from the mirror the base image uses).

The image becomes an ext4 disk inside a container of that image: a tar of its own tree, then
`mkfs.ext4 -d` from that tar (owners and modes as in the image; no loop device, no mount,
nothing of the host). Disk, kernel and initramfs are cached on the host under the image's id
(the recorded key) with the guest's package list. A failed attempt leaves the cache as it was:
everything is written beside the entry and renamed into place when complete.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.boxes.tool_box import ASSETS, ToolBox
from builder.engine import LABEL_RECIPE
from builder.errors import ImageError
from builder.formats import archives
from builder.formats.architecture import X86_64, Architecture
from builder.formats.checksums import parse_sha256sums, sha256_file
from builder.host.cache import Cache
from builder.host.locks import exclusive
from builder.log import StepOutput
from builder.run_context import ContainerEngine

_COMMON = (
    "udev",
    "linux-image-amd64",
    "initramfs-tools",
    "zstd",
    "e2fsprogs",
    "libarchive13t64",
    "procps",
    "kmod",
)
BOXES = {
    # rpm: the .rpm is tested on this guest too (Debian's rpm, --nodeps).
    "systemd": ToolBox(
        "guest-systemd",
        ASSETS / "Dockerfile.guest",
        ("systemd", "systemd-sysv", *_COMMON, "rpm"),
        memory="2g",
        extra_args=(("INIT", "systemd"),),
    ),
    "sysvinit": ToolBox(
        "guest-sysvinit",
        ASSETS / "Dockerfile.guest",
        _COMMON,
        memory="2g",
        extra_args=(("INIT", "sysvinit"),),
    ),
}
OUT = "/qga-image/out"
FILES = ("disk.img", "vmlinuz", "initrd.img", "packages.txt")
MAX_DISK_BYTES = 4 << 30
# The tree as a tar (mount points added empty), then the disk made from it, sized to fit.
MAKE_DISK = f"""\
mkdir -p /qga-image/mnt/proc /qga-image/mnt/sys /qga-image/mnt/dev /qga-image/mnt/run \\
    /qga-image/mnt/etc {OUT}
chmod 0555 /qga-image/mnt/proc /qga-image/mnt/sys
# The engine mounts its own hostname, hosts and resolv.conf over the image's: the guest's.
echo qga-guest > /qga-image/mnt/etc/hostname
printf '127.0.0.1 localhost\\n127.0.1.1 qga-guest\\n' > /qga-image/mnt/etc/hosts
: > /qga-image/mnt/etc/resolv.conf
tar --numeric-owner --owner=0 --group=0 -C /qga-image/mnt -cf /qga-image/root.tar \\
    ./proc ./sys ./dev ./run
tar --one-file-system --numeric-owner --xattrs -C / --exclude=./qga-image --exclude=./proc \\
    --exclude=./sys --exclude=./dev --exclude=./run --exclude=./.dockerenv \\
    --exclude=./etc/hostname --exclude=./etc/hosts --exclude=./etc/resolv.conf \\
    -rf /qga-image/root.tar .
tar --numeric-owner --owner=0 --group=0 -C /qga-image/mnt -rf /qga-image/root.tar \\
    ./etc/hostname ./etc/hosts ./etc/resolv.conf
size=$(( $(du -sm /qga-image/root.tar | cut -f1) * 13 / 10 + 256 ))
mkfs.ext4 -q -F -L qga-root -d /qga-image/root.tar {OUT}/disk.img "${{size}}M"
rm -f /qga-image/root.tar
cp /boot/vmlinuz-* {OUT}/vmlinuz
cp /boot/initrd.img-* {OUT}/initrd.img
dpkg-query -W -f='${{Package}}\\t${{Version}}\\n' > {OUT}/packages.txt
cd {OUT} && sha256sum -- * > /qga-image/SHA256SUMS && mv /qga-image/SHA256SUMS {OUT}/
"""


@dataclass(frozen=True)
class GuestImage:
    init: str  # systemd | sysvinit
    key: str  # the guest image's id: what the cached disk was made from
    root: Path
    packages: dict[str, str]
    arch: Architecture = X86_64  # the guest's machine (the arm64 one: caches/arm64_guest.py)

    @property
    def disk(self) -> Path:
        return self.root / "disk.img"

    @property
    def kernel(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.root / "initrd.img"

    def record(self) -> dict[str, Any]:
        meta = f"linux-image-{self.arch.debian}"
        kernel = next(  # the versioned kernel package linux-image-amd64 (or -arm64) depends on
            (v for k, v in self.packages.items() if k.startswith("linux-image-") and k != meta),
            "",
        )
        record = {
            "init": self.init,
            "image_id": self.key,
            "kernel_package": kernel,
            "systemd": self.packages.get("systemd", ""),
            "sysvinit": self.packages.get("sysvinit-core", ""),
            "packages": self.packages,
        }
        if self.arch.cross:  # the x86-64 guests' records stay as they were
            record["architecture"] = self.arch.name
        return record


def ensure_guest(
    engine: ContainerEngine, cache: Cache, init: str, output: StepOutput
) -> GuestImage:
    """The guest's disk, kernel and initramfs: cached, or made now."""
    image = BOXES[init].image(engine, cache, output)
    key = image.image_id
    entry = cache.dir("vm/guests") / f"{init}-{key.removeprefix('sha256:')[:24]}"
    with exclusive(cache.lock_path(f"guest-{entry.name}"), f"guest {entry.name}", output.line):
        if not entry_complete(entry, key):
            _make(engine, key, entry, output)
        else:
            output.line(f"reusing the {init} guest disk {entry} (image {key[:19]})")
    return GuestImage(init, key, entry, read_packages(entry / "packages.txt"))


def entry_complete(entry: Path, key: str) -> bool:
    marker = entry / ".complete"
    return marker.is_file() and marker.read_text().strip() == key


def read_packages(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        name, _, version = line.partition("\t")
        found[name] = version
    return found


def _make(engine: ContainerEngine, image_id: str, entry: Path, output: StepOutput) -> None:
    output.line(f"making the guest disk from {image_id[:19]} (tar of its tree, mkfs.ext4 -d)")
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=entry.parent))
    try:
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
                    f"the guest disk could not be made (exit {code})\n{output.tail_text()}",
                    hint=f"full log: {output.log_path}",
                )
            archives.safe_extract(
                box.get_archive(OUT),
                staging,
                what="the guest disk",
                limits=archives.Limits(max_bytes=MAX_DISK_BYTES, max_members=len(FILES) + 2),
            )
        _check(staging / "out")
        (staging / "out" / ".complete").write_text(image_id + "\n")
        if entry.exists():  # an entry of ours, made from an older image or left incomplete
            shutil.rmtree(entry)
        (staging / "out").rename(entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    output.line(f"guest disk ready: {entry}")


def _check(out: Path) -> None:
    """What came out of the container is what was made in it, file by file."""
    sums = parse_sha256sums((out / "SHA256SUMS").read_text())
    for name in FILES:
        path = out / name
        if not path.is_file() or sums.get(name) != sha256_file(path):
            raise ImageError(f"the guest disk's {name} is missing or changed on the way out")
