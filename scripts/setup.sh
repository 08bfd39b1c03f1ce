#!/usr/bin/env bash
# Idempotent set-up for qga-builder on a Debian/Ubuntu host (Debian 12 and 13, Ubuntu 24.04);
# `make build` and `make test` call it.
#   scripts/setup.sh            virtualenv + Docker engine + host tools for builds
#   scripts/setup.sh --test     the same, plus what the test suite needs
# Windows builds need nothing more: wine runs in a container of the tool's own, never here.
# Each part checks first and says what it does; nothing is done twice.
set -euo pipefail
cd "$(dirname "$0")/.."

WANT_TEST=0
[[ "${1:-}" == "--test" ]] && WANT_TEST=1
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/qga-builder-dockerd.log}

say() { printf 'setup: %s\n' "$*" >&2; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || { say "please install: ${missing[*]}"; exit 1; }
    if [[ $APT_UPDATED -eq 0 ]]; then
        say "apt-get update"
        as_root apt-get update -q >/dev/null
        APT_UPDATED=1
    fi
    say "installing host packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null || {
        say "apt-get could not install: ${missing[*]} (on Ubuntu some are in universe:"
        say "sudo add-apt-repository universe)"
        exit 1
    }
}

# 1. Python virtualenv with the project and its dependencies. Debian and Ubuntu ship venv's pip
#    apart from python3, in python3-venv: without it `python3 -m venv` stops half-way and leaves
#    a venv without pip, which is made again here. Another PYTHON is taken as it is.
if [[ "$PYTHON" == python3 ]]; then
    apt_install python3 python3-venv
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "qga-builder needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1 || true)"
    say "point PYTHON at one, e.g. PYTHON=python3.12 scripts/setup.sh"
    exit 1
fi
stamp="$VENV/.qga-builder-installed"
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" ]]; then
        say "$VENV exists and is not a virtualenv: move it away, or set VENV to another path"
        exit 1
    fi
    say "creating virtualenv $VENV"
    "$PYTHON" -m venv --clear "$VENV"   # --clear: a venv left without pip is made anew
fi
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
    say "installing qga-builder and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
else
    say "virtualenv $VENV is up to date"
fi

# 2. Host tools the builds use: debootstrap (registry-free base images), git, xz, apt keyring,
#    qemu-system-x86 (the VM test of built agents), diffoscope (what differs, for `verify`).
apt_install debootstrap debian-archive-keyring git xz-utils ca-certificates diffoscope-minimal
# The unit tests make small MSIs with wixl and read them back with msitools and gcab.
apt_install wixl msitools gcab
if ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed"; then
    apt_install qemu-system-x86   # without recommends: no GUI, no firmware bundles
fi

# 3. A Docker engine: use one that answers (DOCKER_HOST or the default socket), else start one.
docker_answers() {
    "$VENV/bin/python" -c 'import docker; docker.from_env(timeout=5).ping()' 2>/dev/null
}
if docker_answers; then
    say "Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}"
else
    if [[ -n "${DOCKER_HOST:-}" ]]; then
        say "DOCKER_HOST=$DOCKER_HOST does not answer; unset it to let setup start a local engine"
        exit 1
    fi
    command -v dockerd >/dev/null || apt_install docker.io
    # The default engine's daemon, by its pid file: a second engine (the tests start one with
    # its own pid file and socket) is not it.
    main_dockerd_alive() {
        local pid
        pid=$(cat /var/run/docker.pid 2>/dev/null) || return 1
        [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]]
    }
    # A dockerd that is starting, or dying, gets a moment to answer or to go.
    for _ in $(seq 1 30); do
        main_dockerd_alive || break
        docker_answers && break
        sleep 1
    done
    if ! docker_answers; then
        # A dockerd that was killed leaves its pid file behind, and a new one refuses to start.
        main_dockerd_alive || as_root rm -f /var/run/docker.pid
        say "starting dockerd (log: $DOCKERD_LOG)"
        # Detached, with its output in a file: an inherited stdout would keep CI's pipe open.
        as_root bash -c "setsid dockerd >'$DOCKERD_LOG' 2>&1 < /dev/null &"
        for _ in $(seq 1 60); do
            docker_answers && { say "Docker engine is up"; break; }
            sleep 1
        done
    fi
    docker_answers || {
        say "dockerd did not come up; see $DOCKERD_LOG"; tail -20 "$DOCKERD_LOG" >&2; exit 1; }
fi

# 4. For the tests: tools the unit tests use on the host (real binaries and patches).
if [[ $WANT_TEST -eq 1 ]]; then
    apt_install gcc libc6-dev patch
    # The second Docker engine of the engine tests (tests/second_engine.py): certificates made
    # with openssl, its own bridge (ip) and the rules its containers need (iptables).
    apt_install openssl iproute2 iptables
    # FIREWHEEL's own guest agent driver, as labs run it: firewheel without its dependencies
    # (the driver needs only qemu.qmp, pinned as firewheel 3.1.0 pins it).
    if ! "$VENV/bin/python" -c 'import firewheel, qemu.qmp' 2>/dev/null; then
        say "installing FIREWHEEL's driver (firewheel 3.1.0, qemu.qmp 0.0.3) for the tests"
        "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
            firewheel==3.1.0 qemu.qmp==0.0.3
    fi
fi

# 5. A Debian mirror: bases and Debian sources come from the first Debian mirror in the host's
#    apt sources or QGA_BUILDER_DEBIAN_MIRROR. An Ubuntu host has none: say so now, in the
#    tool's own words (with a working example), rather than in the middle of the first build.
"$VENV/bin/python" - <<'EOF'
import sys

from builder.errors import InputError
from builder.host.debian import host_mirror

try:
    print(f"setup: Debian mirror: {host_mirror()}", file=sys.stderr)
except InputError as exc:
    print(f"setup: note: {exc}", file=sys.stderr)
EOF
say "ready"
