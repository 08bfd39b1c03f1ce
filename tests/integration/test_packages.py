"""The packages of the default recipe's build, installed for real: the .deb with dpkg into a
clean Debian container (and removed and purged, leaving nothing), replacing a stand-in for the
distribution's qemu-guest-agent; the .rpm with rpm into a root directory; the unit through
`systemd-analyze verify` and the .deb through lintian in the packager box."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.engine import LABEL_RECIPE, Engine
from builder.formats.checksums import parse_sha256sums
from builder.host.cache import Cache
from builder.stages import package
from builder.stages.base_image import ensure_base
from builder.stages.build_image import ensure_build_image

UNIT = "/usr/lib/systemd/system/qemu-guest-agent.service"
WANTS = (
    r"/etc/systemd/system/dev-virtio\x2dports-org.qemu.guest_agent.0.device.wants"
    "/qemu-guest-agent.service"
)
# What dpkg keeps of every package it ever saw (its database and logs): not the package's.
DPKG_OWN = ("/var/lib/dpkg/", "/var/log/dpkg.log", "/var/log/alternatives.log")


class Quiet:
    """A StepOutput for the image helpers outside a run."""

    name = "test"
    log_path = Path("/dev/null")

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def tail_text(self, skip_blank: bool = False) -> str:
        return "\n".join(self.lines[-40:])


def _one(build: Path, suffix: str) -> Path:
    found = sorted(build.glob(f"*{suffix}"))
    assert len(found) == 1, (suffix, sorted(p.name for p in build.iterdir()))
    return found[0]


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Box:
    def __init__(self, container) -> None:
        self.container = container

    def sh(self, script: str, user: str | None = None) -> tuple[int, str]:
        lines: list[str] = []
        code = self.container.run(["sh", "-c", script], on_line=lines.append, user=user)
        return code, "\n".join(lines)

    def ok(self, script: str, user: str | None = None) -> str:
        code, printed = self.sh(script, user)
        assert code == 0, f"{script}\n{printed[-3000:]}"
        return printed


@pytest.fixture(scope="module")
def debian_box(engine: Engine) -> Iterator[Box]:
    """A clean Debian trixie container (the debootstrap base), as root, with no network."""
    base = ensure_base(engine, package.BASE, Cache.default(), lambda line: None)
    with engine.container(
        base.image_id, labels={LABEL_RECIPE: "test-packages"}, user="root", network=False
    ) as container:
        yield Box(container)


@pytest.fixture(scope="module")
def packager_box(engine: Engine) -> Iterator[Box]:
    base = ensure_base(engine, package.BASE, Cache.default(), lambda line: None)
    image = ensure_build_image(
        engine, package.image_plan(), base.image_id, "packager", Cache.default(), Quiet()
    )
    with engine.container(
        image.image_id, labels={LABEL_RECIPE: "test-packages"}, user="root", network=False
    ) as container:
        yield Box(container)


FILES = (
    "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /tmp \\) -prune -o -print"
)


def test_packages_are_published_and_recorded(patched_build: Path) -> None:
    sums = parse_sha256sums((patched_build / "SHA256SUMS").read_text())
    for suffix in ("_amd64.deb", ".x86_64.rpm", "-linux-x86_64.tar.gz"):
        assert _one(patched_build, suffix).name in sums
    manifest = json.loads((patched_build / "manifest.json").read_text())
    kinds = {a["kind"] for a in manifest["artifacts"]}
    assert {"deb", "rpm", "tarball", "static-elf"} <= kinds
    log = next((patched_build / "logs").glob("*-package.log")).read_text()
    assert "lintian: no errors" in log and "systemd-analyze verify: passed" in log
    assert manifest["vm_test"]["installed_from"] == _one(patched_build, "_amd64.deb").name


def test_deb_installs_replaces_the_distributions_agent_and_purges_clean(
    patched_build: Path, debian_box: Box
) -> None:
    deb = _one(patched_build, "_amd64.deb")
    debian_box.container.put_archive("/tmp", _tar({deb.name: deb.read_bytes()}))
    # A stand-in for Debian's qemu-guest-agent, owning the same unit path.
    debian_box.ok(
        "mkdir -p /tmp/fake/DEBIAN /tmp/fake/usr/lib/systemd/system && "
        "printf 'Package: qemu-guest-agent\\nVersion: 1:10.0.0-1\\nArchitecture: amd64\\n"
        "Maintainer: A <a@example.org>\\nDescription: stand-in\\n' > /tmp/fake/DEBIAN/control && "
        f"echo fake > /tmp/fake{UNIT} && dpkg-deb --root-owner-group -b /tmp/fake /tmp/fake.deb"
    )
    debian_box.ok("dpkg -i /tmp/fake.deb")
    before = set(debian_box.ok(f"dpkg --purge qemu-guest-agent >/dev/null && {FILES}").split())
    debian_box.ok("dpkg -i /tmp/fake.deb")

    printed = debian_box.ok(f"dpkg -i /tmp/{deb.name}")
    print(printed)
    assert "qemu-guest-agent" in printed and "removing" in printed.lower()
    status = debian_box.ok("dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' '*'")
    assert "ii  qemu-ga-patched" in status and "ii  qemu-guest-agent" not in status
    listed = debian_box.ok("dpkg -L qemu-ga-patched").split()
    for path in (
        "/usr/sbin/qemu-ga-patched-static",
        UNIT,
        "/usr/lib/udev/rules.d/60-qemu-guest-agent.rules",
        "/etc/init.d/qemu-guest-agent",
        "/etc/default/qemu-guest-agent",
    ):
        assert path in listed, path
    assert "BindsTo=dev-virtio" in debian_box.ok(f"cat {UNIT}")  # ours, not the stand-in's
    conffiles = debian_box.ok("dpkg-query -W -f='${Conffiles}' qemu-ga-patched")
    assert "/etc/default/qemu-guest-agent" in conffiles
    assert "/etc/init.d/qemu-guest-agent" in conffiles
    # Enabled the Debian way: update-rc.d links and the unit hooked to the port's device.
    debian_box.ok("ls /etc/rc2.d/S*qemu-guest-agent && ls /etc/rc0.d/K*qemu-guest-agent")
    debian_box.ok(f"test -L '{WANTS}'")
    assert "stop qemu-guest-agent.service" in debian_box.ok(
        "cat /var/lib/dpkg/info/qemu-ga-patched.prerm"
    )
    assert "10.0" in debian_box.ok("/usr/sbin/qemu-ga-patched-static --version")
    # The init script does not start an agent on a guest without the port.
    assert "not starting" in debian_box.ok("/etc/init.d/qemu-guest-agent start")

    debian_box.ok("dpkg -r qemu-ga-patched")
    assert debian_box.sh("test -e /usr/sbin/qemu-ga-patched-static")[0] != 0
    debian_box.ok("test -e /etc/default/qemu-guest-agent")  # conffiles stay until purge
    debian_box.ok("dpkg --purge qemu-ga-patched")
    after = set(debian_box.ok(FILES).split())
    changed = sorted(path for path in before ^ after if not path.startswith(DPKG_OWN))
    assert changed == [], changed


def test_rpm_metadata_and_install_into_a_root(patched_build: Path, packager_box: Box) -> None:
    rpm = _one(patched_build, ".x86_64.rpm")
    packager_box.container.put_archive("/tmp", _tar({rpm.name: rpm.read_bytes()}))
    info = packager_box.ok(f"rpm --dbpath /tmp/db -qip /tmp/{rpm.name}")
    print(info)
    for line in (
        "Name        : qemu-ga-patched",
        "Architecture: x86_64",
        "Build Host  : qga-builder",
    ):
        assert line in info
    assert "Version     : 10.0.13+qga1" in info and "Release     : 1" in info
    listed = packager_box.ok(f"rpm --dbpath /tmp/db -qlp /tmp/{rpm.name}").split()
    assert sorted(listed) == sorted(
        [
            "/etc/qemu",
            "/etc/qemu/fsfreeze-hook",
            "/etc/qemu/fsfreeze-hook.d",
            "/etc/qemu/qemu-ga.conf",
            "/etc/rc.d/init.d/qemu-guest-agent",
            "/etc/sysconfig/qemu-guest-agent",
            UNIT,
            "/usr/lib/udev/rules.d/60-qemu-guest-agent.rules",
            "/usr/sbin/qemu-ga-patched-static",
        ]
    )
    assert "qemu-guest-agent" in packager_box.ok(
        f"rpm --dbpath /tmp/db -qp --conflicts /tmp/{rpm.name}"
    )
    scripts = packager_box.ok(f"rpm --dbpath /tmp/db -qp --scripts /tmp/{rpm.name}")
    assert "postinstall scriptlet" in scripts and "preuninstall scriptlet" in scripts
    # Into a root directory. rpm --root needs chroot (CAP_SYS_CHROOT, which the tool's
    # containers drop), so the files are relocated under it instead, its database beside them;
    # no shell there to run the scriptlets in, so --noscripts.
    packager_box.ok(
        f"mkdir -p /tmp/root/db && rpm -i --nodeps --noscripts --badreloc --relocate /=/tmp/root "
        f"--dbpath /tmp/root/db /tmp/{rpm.name}"
    )
    db = "--dbpath /tmp/root/db"
    assert "qemu-ga-patched-10.0.13+qga1-1.x86_64" in packager_box.ok(f"rpm {db} -qa")
    assert "BindsTo=dev-virtio" in packager_box.ok(f"cat /tmp/root{UNIT}")
    assert "10.0" in packager_box.ok("/tmp/root/usr/sbin/qemu-ga-patched-static --version")
    packager_box.ok(f"rpm {db} -V qemu-ga-patched || rpm {db} -ql qemu-ga-patched")
    packager_box.ok(f"rpm -e --nodeps --noscripts {db} qemu-ga-patched")
    left = packager_box.ok("cd /tmp/root && find . ! -type d ! -path './db/*'")
    assert left.strip() == "", left


def test_unit_verifies_and_lintian_finds_no_error(patched_build: Path, packager_box: Box) -> None:
    deb = _one(patched_build, "_amd64.deb")
    packager_box.container.put_archive("/tmp", _tar({deb.name: deb.read_bytes()}))
    printed = packager_box.ok(
        f"lintian --fail-on error --display-info /tmp/{deb.name}; echo rc=$?", user="builder"
    )
    print(printed)
    assert "rc=0" in printed and "\nE: " not in f"\n{printed}"
    packager_box.ok(
        f"dpkg-deb -x /tmp/{deb.name} /tmp/v && cp -rn /usr/lib/systemd/system/. "
        "/tmp/v/usr/lib/systemd/system/"
    )
    packager_box.ok(f"systemd-analyze verify --root=/tmp/v /tmp/v{UNIT}")
    # It can fail: the plain unit next to no agent binary does not verify.
    code, _ = packager_box.sh(
        f"mkdir -p /tmp/w/usr/lib/systemd/system && cp /tmp/v{UNIT} /tmp/w{UNIT} && "
        "cp -rn /usr/lib/systemd/system/. /tmp/w/usr/lib/systemd/system/ && "
        f"systemd-analyze verify --root=/tmp/w /tmp/w{UNIT}"
    )
    assert code != 0
