"""Service definitions that start the agent at boot (systemd, sysvinit, upstart).

They follow the set-ups of the FIREWHEEL page the product grew from; the binary's path comes from
the recipe (`services.exec_path`).
"""

from __future__ import annotations

SYSTEMD = """\
[Unit]
Description=QEMU Guest Agent (patched: guest-exec-status streams output)

[Service]
Type=simple
Restart=always
RestartSec=5
ExecStart={exec_path}
LimitNOFILE=102400

[Install]
WantedBy=multi-user.target
"""

SYSVINIT = """\
#!/bin/sh
### BEGIN INIT INFO
# Provides:          qemu-guest-agent
# Required-Start:    $local_fs
# Required-Stop:     $local_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: QEMU Guest Agent (patched)
### END INIT INFO
# Install as /etc/init.d/qemu-guest-agent.

PIDFILE=/var/run/qemu-guest-agent.pid
DAEMON={exec_path}

case "$1" in
start)
    "$DAEMON" &
    echo $! >"$PIDFILE"
    ;;
stop)
    [ -e "$PIDFILE" ] && kill "$(cat "$PIDFILE")"
    rm -f "$PIDFILE"
    ;;
restart)
    "$0" stop
    "$0" start
    ;;
status)
    if [ -e "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        echo "qemu-guest-agent is running, pid=$(cat "$PIDFILE")"
    else
        echo "qemu-guest-agent is NOT running"
        exit 1
    fi
    ;;
*)
    echo "Usage: $0 {{start|stop|status|restart}}"
    exit 2
    ;;
esac

exit 0
"""

UPSTART = """\
# Install as /etc/init/qemu-guest-agent.conf.
description "QEMU Guest Agent (patched)"
author "qga-builder"
start on runlevel [2345]
stop on runlevel [016]

respawn

exec {exec_path}
"""

# kind -> (file name, template, file mode)
SERVICE_FILES: dict[str, tuple[str, str, int]] = {
    "systemd": ("qemu-guest-agent.service", SYSTEMD, 0o644),
    "sysvinit": ("qemu-guest-agent.init", SYSVINIT, 0o755),
    "upstart": ("qemu-guest-agent.conf", UPSTART, 0o644),
}


def render_services(kinds: tuple[str, ...], exec_path: str) -> dict[str, tuple[bytes, int]]:
    """File name -> (content, mode) for each requested kind."""
    files = {}
    for kind in kinds:
        name, template, mode = SERVICE_FILES[kind]
        files[name] = (template.format(exec_path=exec_path).encode(), mode)
    return files
