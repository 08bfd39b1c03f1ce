"""The release tarball: the static agent with its unit, udev rule, init scripts, defaults file,
README and SHA256SUMS under one directory. Deterministic: sorted members, owner root, times
SOURCE_DATE_EPOCH, no gzip name or time."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from builder.formats import service_files as sf
from builder.formats.checksums import format_sha256sums, sha256_bytes
from builder.formats.package_sources import PackageSpec

README = """\
{stem}

The QEMU Guest Agent built statically by qga-builder from QEMU {qemu}
(guest-exec-status returns a command's output while it runs). It runs on
any {machine} Linux guest.

Install (as root, from this directory):

  install -D -m 0755 {binary} {exec_path}
  install -D -m 0644 {unit}.service /usr/lib/systemd/system/{unit}.service
  install -D -m 0644 {rule} /usr/lib/udev/rules.d/{rule}
  install -D -m 0644 {unit}.default /etc/default/{unit}
  install -D -m 0644 qemu-ga.conf {conf}
  install -D -m 0755 fsfreeze-hook {hook}
  install -d -m 0755 {hook}.d
  systemctl daemon-reload && udevadm trigger --subsystem-match=virtio-ports --action=add

Without systemd: install {unit}.init as /etc/init.d/{unit} (sysvinit) or
{unit}.conf as /etc/init/{unit}.conf (upstart).

The agent starts when the guest has the virtio-serial port {port}
(QEMU: -device virtio-serial -device virtserialport,name={port},...)
and stops when it goes. Check: systemctl status {unit}
Extra arguments: DAEMON_ARGS in /etc/default/{unit}.
The agent keeps its state in /var/run and reads {conf} (which enables
QEMU's fsfreeze hook: scripts in {hook}.d/ run around a filesystem freeze),
wherever the binary lies.
Verify the files: sha256sum -c SHA256SUMS
"""


def contents(spec: PackageSpec, binary: bytes) -> dict[str, tuple[bytes, int]]:
    unit = sf.SERVICE_NAME
    text = {
        f"{unit}.service": (sf.SYSTEMD, 0o644),
        sf.UDEV_RULE_NAME: (sf.UDEV_RULE, 0o644),
        f"{unit}.init": (sf.SYSVINIT, 0o755),
        f"{unit}.conf": (sf.UPSTART, 0o644),
        f"{unit}.default": (sf.DEFAULTS, 0o644),
        "qemu-ga.conf": (sf.QGA_CONF, 0o644),
    }
    files = {name: (spec.file(t).encode(), mode) for name, (t, mode) in text.items()}
    files["fsfreeze-hook"] = (spec.fsfreeze_hook.encode(), 0o755)
    files[spec.binary_name] = (binary, 0o755)
    readme = README.format(
        stem=spec.tarball_stem,
        qemu=spec.qemu_version,
        machine=spec.architecture.elf_machine_name,
        binary=spec.binary_name,
        exec_path=spec.exec_path,
        unit=unit,
        rule=sf.UDEV_RULE_NAME,
        port=sf.PORT_NAME,
        conf=sf.CONF_FILE,
        hook=sf.HOOK,
    )
    files["README"] = (readme.encode(), 0o644)
    sums = {name: sha256_bytes(data) for name, (data, _) in files.items()}
    files["SHA256SUMS"] = (format_sha256sums(sums).encode(), 0o644)
    return files


def write(path: Path, spec: PackageSpec, binary: bytes) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        entries = [(f"{spec.tarball_stem}/", None, 0o755)]
        entries += [
            (f"{spec.tarball_stem}/{name}", data, mode)
            for name, (data, mode) in sorted(contents(spec, binary).items())
        ]
        for name, data, mode in entries:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mode, info.mtime = mode, spec.source_date_epoch
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with (
        path.open("wb") as handle,
        gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=9) as gz,
    ):
        gz.write(raw.getvalue())
