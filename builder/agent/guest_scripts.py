"""The shell the booted guest runs for vm-test's scenarios (on the scenario disk): the common
functions, each scenario's first boot, and its finish after the host's checks."""

from __future__ import annotations

from builder.formats import service_files as sf

LIB = f"""\
say() {{ echo "QGA-SCENARIO $*"; }}
phase() {{ cat /var/lib/qga-scenario/phase 2>/dev/null || echo 0; }}
set_phase() {{ mkdir -p /var/lib/qga-scenario && echo "$1" > /var/lib/qga-scenario/phase && sync; }}
# Every path of the root file system with its type, mode and owner; what changes anyway
# (package databases, logs, caches, systemd's own state) is left out.
snapshot() {{
    find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \\
        -o -path /var/tmp -o -path /var/log -o -path /var/cache -o -path /var/lib/dpkg \\
        -o -path /var/lib/rpm -o -path /var/lib/qga-scenario -o -path /opt/x \\
        -o -path /var/lib/systemd/random-seed -o -path /var/lib/systemd/timers \\
        -o -path /var/lib/systemd/catalog -o -path /var/lib/systemd/coredump \\
        -o -path /var/lib/systemd/pstore -o -path /var/lib/systemd/credential.secret \\
        -o -path /etc/ld.so.cache -o -path /root \\) -prune -o -printf '%p %y %m %U:%G\\n' | sort
}}
hello() {{
    say hello "kernel=$(uname -r) init=$(cat /proc/1/comm)" \\
        "systemd=$(systemctl --version 2>/dev/null | sed -n '1s/^systemd //p' | cut -d' ' -f1)"
}}
# After removal: is any agent left, and what of ours is in the tree (diff to before).
leftovers() {{
    sleep 3
    if pgrep -f "$AGENT" >/dev/null; then
        say removed agent-still-running
    else
        say removed no-agent-process
    fi
}}
# When the agent is not running 30 s after the install, the console says why (a failed
# check carries the console's last lines).
explain_later() {{
    (sleep 30; pgrep -f "$AGENT" >/dev/null && exit 0
     say unit "$(systemctl show -p ActiveState -p SubState -p NRestarts -p Result \
         {sf.SERVICE_NAME} 2>&1 | tr '\n' ' ')"
     journalctl -b -u {sf.SERVICE_NAME} -n 15 --no-pager 2>&1 |
         while read -r line; do say journal "$line"; done) &
}}
compare() {{
    snapshot > /var/lib/qga-scenario/after.txt
    diff /var/lib/qga-scenario/before.txt /var/lib/qga-scenario/after.txt | grep '^[<>]' |
        while read -r line; do say diff "$line"; done
    for f in {sf.STATE_FILE} {sf.PID_FILE}; do [ -e "$f" ] && say diff "> $f"; done
    say compared done
}}
"""

# Phase 0 of each scenario, at the first boot: what the guest does before the host talks.
FIRST_BOOT = {
    "systemd": "snapshot > /var/lib/qga-scenario/before.txt\n"
    "dpkg -i /run/qga-scenario/v1.deb; say installed $?\nexplain_later\n",
    "no-port": "dpkg -i /run/qga-scenario/v1.deb; say installed $?\nsleep 10\n"
    'say state "$(systemctl show -p ActiveState --value qemu-guest-agent)'
    " $(systemctl show -p NRestarts --value qemu-guest-agent)"
    ' $(pgrep -c -f "$AGENT")"\nsay finished\nsystemctl poweroff\n',
    # Debian's postinst does not start its agent on a running guest (a static unit): udev
    # does, as at the next boot.
    "replace": "dpkg -i /opt/qga-test/qemu-guest-agent_*.deb; say installed $?\n"
    "udevadm trigger --subsystem-match=virtio-ports --action=add\n",
    "sysvinit": "snapshot > /var/lib/qga-scenario/before.txt\n"
    "dpkg -i /run/qga-scenario/v1.deb; say installed $?\n",
    "rpm": "mkdir -p /etc/sysconfig /etc/rc.d/init.d  # as RPM-family guests have them\n"
    "snapshot > /var/lib/qga-scenario/before.txt\n"
    "rpm -i --nodeps /run/qga-scenario/v1.rpm; say installed $?\nexplain_later\n",
}
FINISH = {
    "systemd": "dpkg -r qemu-ga-patched; leftovers\ndpkg -P qemu-ga-patched; say purged $?\n"
    "compare\nsay finished\nsystemctl poweroff\n",
    "sysvinit": "dpkg -r qemu-ga-patched; leftovers\ndpkg -P qemu-ga-patched; say purged $?\n"
    "compare\nsay finished\npoweroff\n",
    "rpm": "rpm -e qemu-ga-patched; say erased $?\nleftovers\ncompare\nsay finished\n"
    "systemctl poweroff\n",
}


# On sysvinit the runner, not the agent, starts the removal after the reboot (the host asks by
# creating GO through the agent): a process the agent started there did not outlive it.
GO = "/run/qga-go-finish"  # in /run itself: the host may ask before the runner has unpacked


def scenario_script(name: str) -> str:
    first = FIRST_BOOT[name]
    again = "  say booted again\n"
    if name == "sysvinit":
        again += f"  while [ ! -e {GO} ]; do sleep 1; done\n  exec sh /run/qga-scenario/finish.sh\n"
    return (
        f"#!/bin/sh\n. /run/qga-scenario/lib.sh\nhello\n"
        f'if [ "$(phase)" = 0 ]; then\n  set_phase 1\n{first}else\n{again}fi\n'
    )
