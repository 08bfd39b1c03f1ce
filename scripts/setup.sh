#!/usr/bin/env bash
# Idempotent set-up for qga-builder on a Debian/Ubuntu host (Debian 12 and 13, Ubuntu 24.04);
# `make build` and `make test` call it.
#   scripts/setup.sh            virtualenv + Docker engine + host tools + the first base image
#   scripts/setup.sh --test     the same, plus what the test suite needs
#   scripts/setup.sh --unit     virtualenv + the host tools the unit tests call (no Docker)
#   scripts/setup.sh --lint     virtualenv only (no Docker)
# Only installing packages, starting dockerd and making the first base image need root (run it
# once with sudo); after that, everything works for a user in the `docker` group, and a
# second run as that user only checks.
# Windows builds need nothing more: wine runs in a container of the tool's own, never here.
# Each part checks first and says what it does; nothing is done twice.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-build}
case "$MODE" in
    build|--test|--unit|--lint) ;;
    *) printf 'setup: unknown option %s (use --test, --unit or --lint)\n' "$MODE" >&2; exit 2 ;;
esac
WANT_TEST=0
[[ "$MODE" == "--test" ]] && WANT_TEST=1
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/qga-builder-dockerd.log}

say() { printf 'setup: %s\n' "$*" >&2; }
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        say "this step needs root: $*"
        say "run \`sudo scripts/setup.sh ${MODE#build}\` once, then your command again as yourself"
        exit 1
    fi
}
# The virtualenv belongs to whoever asked with sudo, not to root.
as_user() {
    if [[ $(id -u) -eq 0 && -n "${SUDO_USER:-}" && "${SUDO_USER}" != root ]]; then
        runuser -u "$SUDO_USER" -- "$@"
    else
        "$@"
    fi
}

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
#    `python -m builder` (the command as the README types it) needs a `python`: Debian names it
#    python3 unless asked (python-is-python3).
if [[ "$PYTHON" == python3 ]]; then
    apt_install python3 python3-venv
fi
command -v python >/dev/null || apt_install python-is-python3
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
    as_user "$PYTHON" -m venv --clear "$VENV"   # --clear: a venv left without pip is made anew
fi
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
    say "installing qga-builder and its dependencies into $VENV"
    as_user "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    as_user touch "$stamp"
else
    say "virtualenv $VENV is up to date"
fi
if [[ "$MODE" == --lint ]]; then say "ready (lint)"; exit 0; fi
if [[ "$MODE" == --unit ]]; then
    # The unit tests make small MSIs (wixl, msitools, gcab) and compile and patch real files;
    # bump's sign and verify an index with a key of their own (gpg, gpgv); Authenticode signs
    # with osslsigncode, from a PKCS#12 file or a PKCS#11 token (softhsm2 through OpenSSL's
    # pkcs11 engine).
    apt_install wixl msitools gcab gcc libc6-dev patch git openssl gpg gpg-agent gpgv
    apt_install osslsigncode softhsm2 libengine-pkcs11-openssl
    say "ready (unit tests)"
    exit 0
fi

# 2. Host tools the builds use: debootstrap (registry-free base images), git, xz, apt keyring,
#    qemu-system-x86 (the VM test of built agents), diffoscope (what differs, for `verify`),
#    gpgv (`bump` verifies the mirror's signed index; gpg makes the tests' own key).
apt_install make debootstrap debian-archive-keyring git xz-utils ca-certificates diffoscope-minimal \
    gpg gpg-agent gpgv
# The unit tests make small MSIs with wixl and read them back with msitools and gcab.
apt_install wixl msitools gcab
# Authenticode signatures of Windows files (`run --authenticode-*`), made on this host.
apt_install osslsigncode
if ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed"; then
    apt_install qemu-system-x86   # without recommends: no GUI, no firmware bundles
fi
apt_install qemu-utils   # qemu-img: the booted guest's disk overlay
# qemu-system-aarch64: vm-test's arm64 guest (virt machine, direct kernel boot: no UEFI firmware)
if ! dpkg-query -W -f='${Status}' qemu-system-arm 2>/dev/null | grep -q "install ok installed"; then
    apt_install qemu-system-arm
fi

# 3. A Docker engine: use one that answers (DOCKER_HOST or the default socket), else start one.
docker_answers() {
    "$VENV/bin/python" -c 'import docker; docker.from_env(timeout=5).ping()' 2>/dev/null
}
if docker_answers; then
    say "Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}"
elif [[ -z "${DOCKER_HOST:-}" && -S /var/run/docker.sock && ! -w /var/run/docker.sock ]]; then
    say "the Docker engine runs, but $(id -un) may not use it: join the docker group"
    say "  sudo usermod -aG docker $(id -un)   (then log in again, or run \`newgrp docker\`)"
    exit 1
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

# 3b. The first base image (Debian trixie, debootstrap + docker import). debootstrap needs root:
#     made here, as root, it is where the tool runs debootstrap for every other base later, in a
#     container, for users without root.
if [[ $(id -u) -eq 0 ]]; then
    "$VENV/bin/python" -m builder base debootstrap --suite trixie 2>&1 |
        sed 's/^/setup: /' >&2
fi

# 4. For the tests: tools the unit tests use on the host (real binaries and patches).
if [[ $WANT_TEST -eq 1 ]]; then
    apt_install gcc libc6-dev patch
    # The tests' PKCS#11 token for Authenticode: softhsm2, reached through OpenSSL's engine.
    apt_install softhsm2 libengine-pkcs11-openssl
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
