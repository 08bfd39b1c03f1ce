"""What the packager box builds from: a debhelper tree for the .deb, a spec file for the .rpm,
and the names and checks of package fields. Pure text; the stage copies it in with the agent.

The .deb is made the Debian way (dpkg-buildpackage + debhelper): dh_installsystemd,
dh_installinit and dh_installudev write the maintainer scripts, /etc/default is a conffile, and
the package conflicts with, replaces and provides the distribution's qemu-guest-agent (same unit
and init script names). Nothing is started by the scripts themselves: a start of the unit would
wait for the port's device; udev starts it (postinst re-triggers the virtio ports).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

from builder.formats import service_files as sf
from builder.formats.architecture import DEFAULT, Architecture

# The hook script and the agent's config file, as the package sources name them.
HOOK_NAME, CONF_NAME = "fsfreeze-hook", "qemu-ga.conf"
# What both Debian (policy 5.6.1, 5.6.12) and RPM accept.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]{1,62}$")
VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+~]{0,62}$")
MAINTAINER_RE = re.compile(
    r"^[^<>,\n]{1,100} <[^<>@\s,]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,}>$"
)


def version_problem(version: str) -> str | None:
    """Why a version is not one a .deb and an .rpm both accept (None: it is)."""
    if not VERSION_RE.match(version):
        return (
            f"{version!r} is not a valid Debian/RPM version: it must start with a digit and "
            "hold only letters, digits and . + ~ (no '-', ':' or spaces), at most 63 characters"
        )
    return None


@dataclass(frozen=True)
class PackageSpec:
    name: str
    version: str  # upstream part, e.g. 10.0.13+qga1
    revision: str  # Debian revision / RPM release
    maintainer: str
    exec_path: str
    qemu_version: str
    source_date_epoch: int
    fsfreeze_hook: str  # QEMU's own hook script, from the source built
    architecture: Architecture = DEFAULT  # the agent's machine (formats/architecture.py)

    @property
    def deb_architecture(self) -> str:
        return self.architecture.debian

    @property
    def rpm_architecture(self) -> str:
        return self.architecture.name

    @property
    def deb_file(self) -> str:
        return f"{self.name}_{self.version}-{self.revision}_{self.deb_architecture}.deb"

    @property
    def rpm_file(self) -> str:
        return f"{self.name}-{self.version}-{self.revision}.{self.rpm_architecture}.rpm"

    @property
    def tarball_stem(self) -> str:
        return f"{self.name}-{self.version}-linux-{self.rpm_architecture}"

    @property
    def binary_name(self) -> str:
        return PurePosixPath(self.exec_path).name

    def file(self, template: str) -> str:
        return sf.render(template, self.exec_path)


SUMMARY = "QEMU Guest Agent, static, with streaming guest-exec-status"
DESCRIPTION = """\
The QEMU Guest Agent (qemu-ga), built statically by qga-builder from
QEMU {qemu}, with a patch that makes guest-exec-status return the output
of a command while it runs. It starts when the guest has the
org.qemu.guest_agent.0 virtio-serial port (a udev rule and a systemd unit
bound to the port's device; a sysvinit script).
Extra arguments: DAEMON_ARGS in {defaults}.
"""


def _description(spec: PackageSpec, defaults: str) -> list[str]:
    return DESCRIPTION.format(qemu=spec.qemu_version, defaults=defaults).splitlines()


def _date(epoch: int, pattern: str) -> str:
    return time.strftime(pattern, time.gmtime(epoch))


def debian_tree(spec: PackageSpec) -> dict[str, tuple[str, int]]:
    """Path under the source directory -> (text, mode): the debian/ directory."""
    name, unit = spec.name, sf.SERVICE_NAME
    sbin = str(PurePosixPath(spec.exec_path).parent).lstrip("/")
    conf_dir = sf.CONF_DIR.lstrip("/")
    prefix = f"debian/{name}.{unit}"
    return {
        "debian/control": (_deb_control(spec), 0o644),
        "debian/changelog": (_deb_changelog(spec), 0o644),
        "debian/copyright": (_deb_copyright(spec), 0o644),
        "debian/rules": (_deb_rules(unit, spec.architecture.cross), 0o755),
        "debian/source/format": ("3.0 (native)\n", 0o644),
        f"debian/{name}.install": (
            f"{spec.binary_name} {sbin}\n{HOOK_NAME} {conf_dir}\n{CONF_NAME} {conf_dir}\n",
            0o644,
        ),
        f"debian/{name}.dirs": (f"{sf.HOOK_DIR.lstrip('/')}\n", 0o644),
        f"debian/{name}.postinst": (_deb_postinst(unit), 0o755),
        f"debian/{name}.prerm": (_deb_prerm(unit), 0o755),
        f"debian/{name}.postrm": (_deb_postrm(), 0o755),
        f"debian/{name}.lintian-overrides": (
            _deb_lintian_overrides(name, spec.exec_path.lstrip("/"), spec.architecture),
            0o644,
        ),
        f"{prefix}.service": (spec.file(sf.SYSTEMD), 0o644),
        f"{prefix}.init": (spec.file(sf.SYSVINIT), 0o755),
        f"{prefix}.default": (spec.file(sf.DEFAULTS), 0o644),
        f"{prefix}.udev": (spec.file(sf.UDEV_RULE), 0o644),
        HOOK_NAME: (spec.fsfreeze_hook, 0o755),
        CONF_NAME: (spec.file(sf.QGA_CONF), 0o644),
    }


def _deb_control(spec: PackageSpec) -> str:
    """The package's control file."""
    name, unit = spec.name, sf.SERVICE_NAME
    long_description = "\n".join(f" {line}" for line in _description(spec, f"/etc/default/{unit}"))
    return f"""\
Source: {name}
Section: admin
Priority: optional
Maintainer: {spec.maintainer}
Build-Depends: debhelper-compat (= 13)
Standards-Version: 4.7.2
Rules-Requires-Root: no
Homepage: https://www.qemu.org/

Package: {name}
Architecture: {spec.deb_architecture}
Depends: ${{misc:Depends}}
Pre-Depends: ${{misc:Pre-Depends}}
Conflicts: qemu-guest-agent
Replaces: qemu-guest-agent
Provides: qemu-guest-agent
Description: {SUMMARY}
{long_description}
"""


def _deb_changelog(spec: PackageSpec) -> str:
    """One entry: this build."""
    name = spec.name
    return f"""\
{name} ({spec.version}-{spec.revision}) unstable; urgency=medium

  * Built by qga-builder from QEMU {spec.qemu_version}.

 -- {spec.maintainer}  {_date(spec.source_date_epoch, "%a, %d %b %Y %H:%M:%S +0000")}
"""


def _deb_copyright(spec: PackageSpec) -> str:
    """Machine-readable copyright."""
    return f"""\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: QEMU
Source: https://www.qemu.org/

Files: *
Copyright: 2003-2025 Fabrice Bellard and the QEMU contributors
License: GPL-2
Comment: {spec.binary_name} is statically linked with GLib (LGPL-2.1+) and
 the GNU C Library (LGPL-2.1+).

License: GPL-2
 This program is free software; you can redistribute it and/or modify
 it under the terms of the GNU General Public License version 2 as
 published by the Free Software Foundation.
 .
 On Debian systems, the complete text of the GNU General Public License
 version 2 can be found in /usr/share/common-licenses/GPL-2.
"""


def _deb_rules(unit: str, cross: bool) -> str:
    """Debhelper with nothing to build."""
    # Another machine's package: dh_makeshlibs would run that machine's objdump (not installed
    # in the packager box); a static agent has no shared library for it to describe anyway.
    makeshlibs = " override_dh_makeshlibs" if cross else ""
    return f"""\
#!/usr/bin/make -f
# The agent comes built, static and stripped: nothing to configure, build, strip or scan.
%:
\tdh $@

override_dh_auto_configure override_dh_auto_build override_dh_auto_test \\
override_dh_auto_install override_dh_auto_clean override_dh_strip override_dh_dwz \\
override_dh_shlibdeps{makeshlibs}:

# A start would wait for the port's device: udev starts the unit (see postinst).
override_dh_installsystemd:
\tdh_installsystemd --name={unit} --no-start

override_dh_installinit:
\tdh_installinit --name={unit} --no-start

override_dh_installudev:
\tdh_installudev --name={unit}
"""


def _deb_postinst(unit: str) -> str:
    """Start on install where the port is, restart on upgrade."""
    return f"""\
#!/bin/sh
set -e
#DEBHELPER#
if [ "$1" = configure ]; then
    if [ -d /run/systemd/system ]; then
        # An upgrade: the running agent restarts on the new binary.
        if [ -n "$2" ]; then
            deb-systemd-invoke try-restart {unit}.service >/dev/null || true
        fi
        # Start the agent now if this guest has its port (udev starts it at every boot).
        # Started by name too: a re-triggered "add" of a device systemd already knows
        # does not always start what the device wants.
        if command -v udevadm >/dev/null; then
            udevadm trigger --subsystem-match=virtio-ports --action=add || true
        fi
        if [ -e {sf.PORT_PATH} ]; then
            deb-systemd-invoke start {unit}.service >/dev/null || true
        fi
    elif [ -x /etc/init.d/{unit} ]; then
        # sysvinit: start it now, or restart it on the new binary (the script does nothing
        # on a guest without the port; in an image builder's chroot, policy-rc.d stops it).
        invoke-rc.d {unit} restart || true
    fi
fi
exit 0
"""


def _deb_prerm(unit: str) -> str:
    """Stop on removal."""
    return f"""\
#!/bin/sh
set -e
# Stop the agent on removal (udev starts it, so debhelper's scripts neither start nor stop it).
if [ "$1" = remove ]; then
    if [ -d /run/systemd/system ]; then
        deb-systemd-invoke stop {unit}.service >/dev/null || true
    elif [ -x /etc/init.d/{unit} ]; then
        invoke-rc.d {unit} stop || true
    fi
fi
#DEBHELPER#
exit 0
"""


def _deb_postrm() -> str:
    """What the agent and QEMU's hook wrote: purge leaves nothing of ours behind."""
    return f"""\
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -f {sf.STATE_FILE} {sf.PID_FILE} {sf.HOOK_LOG}
fi
#DEBHELPER#
exit 0
"""


def _deb_lintian_overrides(name: str, binary: str, arch: Architecture) -> str:
    """Lintian tags that are true and intended."""
    machine = arch.elf_machine_name
    return f"""\
# The agent is static-pie on purpose (ET_DYN without DT_NEEDED): any {machine} Linux guest.
{name}: shared-library-lacks-prerequisites [{binary}]
# Bound to the agent's virtio port: `systemctl enable` hooks it to the port's device.
{name}: systemd-service-file-refers-to-unusual-wantedby-target *
# Built for images, not uploaded to Debian.
{name}: initial-upload-closes-no-bugs *
# qemu-ga --help documents it; QEMU's manual page is not built (no sphinx in a static build).
{name}: no-manual-page [{binary}]
"""


# Installed paths in the .rpm (and the files the spec's %install writes them from).
RPM_FILES = (
    ("unit", f"/usr/lib/systemd/system/{sf.SERVICE_NAME}.service", 0o644),
    ("udev", f"/usr/lib/udev/rules.d/{sf.UDEV_RULE_NAME}", 0o644),
    ("init", f"/etc/rc.d/init.d/{sf.SERVICE_NAME}", 0o755),
    ("sysconfig", f"/etc/sysconfig/{sf.SERVICE_NAME}", 0o644),
    (HOOK_NAME, sf.HOOK, 0o755),
    (CONF_NAME, sf.CONF_FILE, 0o644),
)


# What rpmlint reports of the .rpm that is so on purpose (the packager box fails on anything else).
RPMLINTRC = """\
# The agent is static-pie on purpose: it runs on any {machine} Linux guest.
addFilter("statically-linked-binary")
# Words of the description rpmlint's dictionary lacks.
addFilter("spelling-error .*(qga|virtio|sysvinit)")
# Signing is the release's (SHA256SUMS), not the package's.
addFilter("no-signature")
# qemu-ga --help documents it; QEMU's manual page is not built, and no other docs ship.
addFilter("no-manual-page-for-binary")
addFilter("no-documentation")
# Erasing removes the state and pid files the agent wrote and the hook's log.
addFilter("dangerous-command-in-%postun rm")
# SPDX, as current RPM distributions write it; this rpmlint knows only the older names.
addFilter("invalid-license GPL-2.0-only")
# The init script and QEMU's hook script are the package's, replaced on upgrade like the
# binary (a site's own freeze scripts go in /etc/qemu/fsfreeze-hook.d/, which is kept).
addFilter("non-conffile-in-etc /etc/rc.d/init.d/")
addFilter("non-conffile-in-etc /etc/qemu/fsfreeze-hook$")
"""


def _rpmlintrc(arch: Architecture) -> str:
    return RPMLINTRC.replace("{machine}", arch.elf_machine_name)


def rpm_sources(spec: PackageSpec) -> dict[str, tuple[str, int]]:
    """File name -> (text, mode): the spec file and the files it installs."""
    unit = sf.SERVICE_NAME
    installs = "\n".join(
        f"install -D -m {mode:04o} %{{_sourcedir}}/{key} %{{buildroot}}{path}"
        for key, path, mode in RPM_FILES
    )
    description = "\n".join(_description(spec, f"/etc/sysconfig/{unit}"))
    # Another machine's: `rpmbuild --target` names it, as BuildArch cannot (rpmbuild refuses a
    # BuildArch the build host cannot run: "No compatible architectures found for build").
    build_arch = "" if spec.architecture.cross else f"BuildArch: {spec.rpm_architecture}\n"
    text = f"""\
# Made by qga-builder: the agent comes built, static and stripped.
%global debug_package %{{nil}}
%global __os_install_post %{{nil}}
%global _build_id_links none
%global _buildhost qga-builder
%global use_source_date_epoch_as_buildtime 1
%global build_mtime_policy clamp_to_source_date_epoch
%global _binary_payload w9.gzdio

Name: {spec.name}
Version: {spec.version}
Release: {spec.revision}
Summary: {SUMMARY}
License: GPL-2.0-only
URL: https://www.qemu.org/
Packager: {spec.maintainer}
Group: System Environment/Daemons
{build_arch}AutoReqProv: no
Conflicts: qemu-guest-agent

%description
{description}

%install
install -D -m 0755 %{{_sourcedir}}/{spec.binary_name} %{{buildroot}}{spec.exec_path}
{installs}
install -d -m 0755 %{{buildroot}}{sf.HOOK_DIR}

%post
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload enable {unit}.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    udevadm trigger --subsystem-match=virtio-ports --action=add >/dev/null 2>&1 || :
    # Started by name too: a re-triggered "add" does not always start what the device wants.
    if [ -e {sf.PORT_PATH} ]; then
        systemctl start {unit}.service >/dev/null 2>&1 || :
    fi
fi

%preun
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now {unit}.service >/dev/null 2>&1 || :
fi

%postun
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    # An upgrade: the running agent restarts on the new binary.
    if [ "$1" -ge 1 ]; then
        systemctl try-restart {unit}.service >/dev/null 2>&1 || :
    fi
fi
# Erased: what the agent and QEMU's hook wrote goes too.
if [ "$1" -eq 0 ]; then
    rm -f {sf.STATE_FILE} {sf.PID_FILE} {sf.HOOK_LOG}
fi

%files
%defattr(-,root,root,-)
{spec.exec_path}
/usr/lib/systemd/system/{unit}.service
/usr/lib/udev/rules.d/{sf.UDEV_RULE_NAME}
/etc/rc.d/init.d/{unit}
%config(noreplace) /etc/sysconfig/{unit}
%dir {sf.CONF_DIR}
{sf.HOOK}
%config(noreplace) {sf.CONF_FILE}
%dir {sf.HOOK_DIR}

%changelog
* {_date(spec.source_date_epoch, "%a %b %d %Y")} {spec.maintainer} - {spec.version}-{spec.revision}
- Built by qga-builder from QEMU {spec.qemu_version}.
"""
    files = {
        f"{spec.name}.spec": (text, 0o644),
        f"{spec.name}.rpmlintrc": (_rpmlintrc(spec.architecture), 0o644),
    }
    templates = {
        "unit": sf.SYSTEMD,
        "udev": sf.UDEV_RULE,
        "init": sf.SYSVINIT,
        "sysconfig": sf.DEFAULTS,
        CONF_NAME: sf.QGA_CONF,
    }
    for key, _, mode in RPM_FILES:
        files[key] = (spec.file(templates[key]) if key in templates else spec.fsfreeze_hook, mode)
    return files
