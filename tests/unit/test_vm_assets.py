"""The VM's parts from .deb files (built here with ar and tar, no network), and the initramfs."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from builder.errors import VmTestError
from builder.host import virtual_machine as vm


def make_deb(path: Path, files: dict[str, bytes]) -> Path:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", b""),
        ("data.tar.xz", data.getvalue()),
    ]
    with path.open("wb") as out:
        out.write(b"!<arch>\n")
        for name, body in members:
            out.write(
                f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode()
            )
            out.write(body + (b"\n" if len(body) % 2 else b""))
    return path


def test_unpack_finds_kernel_modules_and_busybox(tmp_path: Path) -> None:
    modules = {
        f"./lib/modules/6.1.0-x/kernel/drivers/{m}.ko": m.encode() for m in vm.VIRTIO_MODULES
    }
    kernel = make_deb(tmp_path / "k.deb", {"./boot/vmlinuz-6.1.0-x": b"bzImage", **modules})
    busybox = make_deb(tmp_path / "b.deb", {"./bin/busybox": b"\x7fELF busybox"})
    root = tmp_path / "root"
    root.mkdir()
    vm._unpack(kernel, busybox, root, vm.DEFAULT_ASSETS)
    assert (root / "vmlinuz-6.1.0-x").read_bytes() == b"bzImage"
    assert (root / "virtio_console.ko").read_bytes() == b"virtio_console"
    assert (root / "busybox").read_bytes().startswith(b"\x7fELF")


def test_kernel_without_virtio_modules_is_named(tmp_path: Path) -> None:
    kernel = make_deb(tmp_path / "k.deb", {"./boot/vmlinuz-6.1.0-x": b"bzImage"})
    busybox = make_deb(tmp_path / "b.deb", {"./bin/busybox": b"x"})
    with pytest.raises(VmTestError, match="lacks modules virtio, virtio_console"):
        vm._unpack(kernel, busybox, tmp_path, vm.DEFAULT_ASSETS)


def test_not_a_deb(tmp_path: Path) -> None:
    bogus = tmp_path / "x.deb"
    bogus.write_bytes(b"PK\x03\x04")
    with pytest.raises(VmTestError, match="not a Debian package"):
        list(vm.deb_members(bogus))


def test_initramfs_is_a_newc_cpio(tmp_path: Path) -> None:
    for name in ("busybox", "agent", *vm.VIRTIO_MODULES):
        (tmp_path / name).write_bytes(name.encode())
    prepared = vm.PreparedVm(
        tmp_path / "k",
        "6.1",
        tmp_path / "busybox",
        {m: tmp_path / m for m in vm.VIRTIO_MODULES},
    )
    cpio = vm.make_initramfs(prepared, tmp_path / "agent", tmp_path / "i.cpio")
    data = cpio.read_bytes()
    assert data.startswith(b"070701") and b"TRAILER!!!" in data
    assert b"sbin/qemu-ga" in data and b"org.qemu.guest_agent.0" in data
    names = []
    at = 0
    while True:  # walk the headers: every entry is 4-byte aligned and well formed
        assert data[at : at + 6] == b"070701"
        namesize = int(data[at + 94 : at + 102], 16)
        filesize = int(data[at + 54 : at + 62], 16)
        name = data[at + 110 : at + 110 + namesize - 1].decode()
        names.append(name)
        at += 110 + namesize
        at += -at % 4
        at += filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            break
    assert "init" in names and "lib/modules/virtio_console.ko" in names
