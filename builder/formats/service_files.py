"""Service definitions that start the agent (systemd, sysvinit, upstart) and the udev rule and
defaults file the packages carry.

The systemd unit is bound to the agent's virtio port, like Debian's qemu-guest-agent: udev
starts it when `org.qemu.guest_agent.0` appears (the rule's SYSTEMD_WANTS, or the unit's
WantedBy= on the device once enabled), systemd stops it when the port goes, and a guest without
the port never starts it (no restart loop). The binary's path comes from the recipe
(`services.exec_path`); extra arguments from /etc/default/qemu-guest-agent (Debian) or
/etc/sysconfig/qemu-guest-agent (RHEL/Fedora).
"""

from __future__ import annotations

PORT_NAME = "org.qemu.guest_agent.0"
PORT_PATH = f"/dev/virtio-ports/{PORT_NAME}"
# systemd's name for the port's device unit (systemd-escape --path PORT_PATH).
DEVICE_UNIT = r"dev-virtio\x2dports-org.qemu.guest_agent.0.device"
SERVICE_NAME = "qemu-guest-agent"
UDEV_RULE_NAME = f"60-{SERVICE_NAME}.rules"

# The paths compiled into the agent (configure --prefix=/usr --sysconfdir=/etc
# --localstatedir=/var, as Debian builds it): they do not move with the binary.
STATE_DIR = "/var/run"
PID_FILE = f"{STATE_DIR}/qemu-ga.pid"
STATE_FILE = f"{STATE_DIR}/qga.state"
CONF_DIR = "/etc/qemu"
CONF_FILE = f"{CONF_DIR}/qemu-ga.conf"
HOOK = f"{CONF_DIR}/fsfreeze-hook"
HOOK_DIR = f"{HOOK}.d"
HOOK_LOG = "/var/log/qga-fsfreeze-hook.log"  # written by QEMU's hook script
# What `qemu-ga -D -F` must show for the units, init scripts and conffile to fit the agent.
AGENT_PATHS = {"statedir": STATE_DIR, "pidfile": PID_FILE, "fsfreeze-hook": HOOK}


def dumped_settings(lines: list[str]) -> dict[str, str]:
    """The `key=value` lines of `qemu-ga -D` (its [general] header and the rest skipped)."""
    settings = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            settings[key.strip()] = value.strip()
    return settings


SYSTEMD = f"""\
[Unit]
Description=QEMU Guest Agent (patched: guest-exec-status streams output)
Documentation=https://www.qemu.org/docs/master/interop/qemu-ga.html
# Started when the agent's virtio port appears (udev rule or WantedBy=), stopped when it goes.
BindsTo={DEVICE_UNIT}
After={DEVICE_UNIT}
IgnoreOnIsolate=yes

[Service]
Type=simple
EnvironmentFile=-/etc/default/{SERVICE_NAME}
EnvironmentFile=-/etc/sysconfig/{SERVICE_NAME}
ExecStart={{exec_path}} $DAEMON_ARGS
Restart=always
RestartSec=1
LimitNOFILE=102400

[Install]
WantedBy={DEVICE_UNIT}
"""

SYSVINIT = f"""\
#!/bin/sh
### BEGIN INIT INFO
# Provides:          {SERVICE_NAME}
# Required-Start:    $local_fs
# Required-Stop:     $local_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: QEMU Guest Agent (patched)
# Description:       Starts the patched QEMU Guest Agent when the guest has
#                    the {PORT_NAME} virtio port.
### END INIT INFO
# Install as /etc/init.d/{SERVICE_NAME}.

PATH=/sbin:/usr/sbin:/bin:/usr/bin
DAEMON={{exec_path}}
PIDFILE={PID_FILE}
PORT={PORT_PATH}
DAEMON_ARGS=""

[ -x "$DAEMON" ] || exit 0
# LSB functions where the guest has them (on Debian: hands over to systemd when it runs).
if [ -r /lib/lsb/init-functions ]; then
    . /lib/lsb/init-functions
fi
# Extra arguments (DAEMON_ARGS) from the package's defaults file.
[ -r /etc/default/{SERVICE_NAME} ] && . /etc/default/{SERVICE_NAME}
[ -r /etc/sysconfig/{SERVICE_NAME} ] && . /etc/sysconfig/{SERVICE_NAME}

running() {{
    [ -e "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}}

case "$1" in
start)
    if [ ! -e "$PORT" ]; then
        echo "{SERVICE_NAME}: no virtio port $PORT, not starting"
        exit 0
    fi
    running && exit 0
    # The agent writes its pid to $PIDFILE, the path built into it.
    # shellcheck disable=SC2086 # DAEMON_ARGS holds several arguments
    "$DAEMON" --daemonize $DAEMON_ARGS
    ;;
stop)
    if running; then
        pid=$(cat "$PIDFILE")
        kill "$pid"
        # Wait for it to go, so that a restart does not find it still running.
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
    fi
    rm -f "$PIDFILE"
    ;;
restart|force-reload)
    "$0" stop
    "$0" start
    ;;
status)
    if running; then
        echo "{SERVICE_NAME} is running, pid=$(cat "$PIDFILE")"
    else
        echo "{SERVICE_NAME} is NOT running"
        exit 3
    fi
    ;;
*)
    echo "Usage: $0 {{start|stop|status|restart|force-reload}}"
    exit 2
    ;;
esac

exit 0
"""

UPSTART = f"""\
# Install as /etc/init/{SERVICE_NAME}.conf.
description "QEMU Guest Agent (patched)"
author "qga-builder"
start on runlevel [2345]
stop on runlevel [016]

respawn

pre-start script
    [ -e {PORT_PATH} ] || {{ stop; exit 0; }}
end script

exec {{exec_path}}
"""

UDEV_RULE = f"""\
# Start the QEMU Guest Agent's systemd unit when its virtio port appears.
SUBSYSTEM=="virtio-ports", ATTR{{name}}=="{PORT_NAME}", \\
  TAG+="systemd", ENV{{SYSTEMD_WANTS}}="{SERVICE_NAME}.service"
"""

# The agent reads CONF_FILE when it is there: the packages ship it to enable QEMU's fsfreeze
# hook (the scripts in HOOK_DIR run around guest-fsfreeze-freeze and -thaw) with no flag, for
# systemd, sysvinit and upstart alike.
QGA_CONF = f"""\
# Read by the QEMU Guest Agent at start ({{exec_path}} -D shows the settings in effect).
[general]
# QEMU's hook: runs the executables in {HOOK_DIR}/ with "freeze" before the
# filesystems are frozen and "thaw" after they are thawed (log: {HOOK_LOG}).
fsfreeze-hook={HOOK}
"""

DEFAULTS = f"""\
# Extra arguments for the QEMU Guest Agent ({{exec_path}} --help lists them), e.g.
# DAEMON_ARGS="--blacklist=guest-file-open,guest-file-write --logfile=/var/log/qemu-ga.log"
# Read by the systemd unit and the init script of {SERVICE_NAME}.
DAEMON_ARGS=""
"""

# kind -> (file name, template, file mode)
SERVICE_FILES: dict[str, tuple[str, str, int]] = {
    "systemd": (f"{SERVICE_NAME}.service", SYSTEMD, 0o644),
    "sysvinit": (f"{SERVICE_NAME}.init", SYSVINIT, 0o755),
    "upstart": (f"{SERVICE_NAME}.conf", UPSTART, 0o644),
}


def render(template: str, exec_path: str) -> str:
    return template.replace("{exec_path}", exec_path)


def render_services(kinds: tuple[str, ...], exec_path: str) -> dict[str, tuple[bytes, int]]:
    """File name -> (content, mode) for each requested kind."""
    files = {}
    for kind in kinds:
        name, template, mode = SERVICE_FILES[kind]
        files[name] = (render(template, exec_path).encode(), mode)
    return files
