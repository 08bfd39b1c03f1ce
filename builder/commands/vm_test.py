"""`qga-builder vm-test OUTPUT_DIR`: install the output's packages in booted Debian guests and
check the agent as users run it (every scenario of `agent.guest_test` by default); `--fast`
boots the bare agent in a busybox initramfs instead. The report goes into the directory's
manifest.json and is printed as JSON."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from builder import log
from builder.agent import guest_test
from builder.agent.contract_in_vm import BOOT_DEADLINE, run_vm_test
from builder.commands.common import print_json
from builder.errors import UsageError, VmTestError
from builder.formats.architecture import X86_64, Architecture, architecture
from builder.formats.manifest import MANIFEST_NAME, SIGNATURE_NAME
from builder.host.cache import Cache
from builder.host.files import replace_file
from builder.host.virtual_machine import AGENT_PORT
from builder.log import Progress

DEFAULT_AGENT = "qemu-ga-patched-static"  # the default recipe's name for it


def agent_in(directory: Path, name: str | None) -> Path:
    """The agent to boot: NAME in the directory; without one, the static-elf artifact its
    manifest.json names (release recipes put the version in it), else the default name."""
    return directory / (name or _listed_agent(directory / MANIFEST_NAME) or DEFAULT_AGENT)


def _listed_agent(manifest_path: Path) -> str | None:
    """The static-elf artifact a manifest lists (None: no readable manifest, or none)."""
    if not manifest_path.is_file() or manifest_path.is_symlink():
        return None
    try:
        listed = json.loads(manifest_path.read_text()).get("artifacts")
    except (OSError, ValueError, AttributeError):
        return None
    for artifact in listed if isinstance(listed, list) else ():
        if isinstance(artifact, dict) and artifact.get("kind") == "static-elf":
            name = artifact.get("name")
            return name if isinstance(name, str) and "/" not in name else None
    return None


FAST_ONLY = ("agent", "port_name", "boot_deadline")


def cmd_vm_test(args: argparse.Namespace) -> int:
    directory: Path = args.output_dir
    _refuse_unused_options(args)
    arch = _machine(directory)
    if args.fast:
        if arch.cross:
            raise VmTestError(
                f"{directory} holds an agent for {arch.name}: --fast boots the bare agent in an "
                "x86-64 VM only",
                hint=f"without --fast, its .deb is installed in a booted {arch.name} guest",
            )
        return _fast(args, directory)
    scenarios = _scenarios(args.scenarios, arch)
    if not directory.is_dir() or not (directory / MANIFEST_NAME).is_file():
        raise VmTestError(f"{directory} is not an output directory of `run` (no {MANIFEST_NAME})")
    from builder.engine import Engine
    from builder.stages import vm_test

    deb, rpm = vm_test.manifest_packages(directory)
    if deb is None:
        raise VmTestError(
            f"{directory} holds no .deb: vm-test installs the package into a booted guest",
            hint="build a recipe with a `kind: deb` artifact, or check the bare agent: --fast",
        )
    if "rpm" in scenarios and rpm is None:
        raise VmTestError(f"{directory} holds no .rpm for the rpm scenario", hint="--scenarios")
    cache = Cache.default()
    progress = Progress(total=1, log_dir=cache.runs / f"vm-test-{directory.name}")
    with progress.step("vm-test") as output:
        report = vm_test.guest_report(
            Engine(), cache, deb, rpm, scenarios, upgrade=True, output=output, arch=arch
        )
    _record(directory / MANIFEST_NAME, report)
    print_json(report)
    if not report["passed"]:
        raise VmTestError(
            "the packaged agent failed in a booted guest: "
            + ", ".join(
                f"{s['name']} ({', '.join(c['name'] for c in s['checks'] if not c['passed'])})"
                for s in report["scenarios"]
                if not s["passed"]
            )
        )
    return 0


def _machine(directory: Path) -> Architecture:
    """The machine the output's agent is for (its manifest says; x86_64 when it cannot)."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file() or manifest_path.is_symlink():
        return X86_64  # said below, in the words of each mode
    try:
        name = json.loads(manifest_path.read_text()).get("architecture") or X86_64.name
        return architecture(str(name))
    except (OSError, ValueError, AttributeError):
        return X86_64


def _refuse_unused_options(args: argparse.Namespace) -> None:
    """The options of one mode given to the other would do nothing: say so."""
    if args.fast and args.scenarios is not None:
        raise UsageError("--scenarios chooses the package scenarios; --fast runs none of them")
    given = [name for name in FAST_ONLY if getattr(args, name) is not None]
    if given and not args.fast:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"{flags}: only with --fast (the bare agent in an initramfs)")


def _scenarios(text: str | None, arch: Architecture) -> tuple[str, ...]:
    known = guest_test.FOREIGN_SCENARIOS if arch.cross else guest_test.SCENARIOS
    if not text:
        return known
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        guests = f" (the {arch.name} guest is a systemd one)" if arch.cross else ""
        raise UsageError(
            f"--scenarios: unknown {', '.join(unknown) or '(none given)'}{guests}; "
            f"choose from {', '.join(known)}"
        )
    return names


def _record(manifest_path: Path, result: dict[str, Any]) -> None:
    if os.path.lexists(manifest_path.parent / SIGNATURE_NAME):
        # A signed output's manifest is listed in its signed SHA256SUMS: changed, it would
        # no longer verify. The report is printed, not recorded.
        log.get_logger().info(
            f"not recorded in {MANIFEST_NAME}: the directory is signed ({SIGNATURE_NAME})"
        )
        return
    if manifest_path.is_file() and not manifest_path.is_symlink():
        manifest = json.loads(manifest_path.read_text())
        manifest["vm_test"] = result
        replace_file(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())


def _fast(args: argparse.Namespace, directory: Path) -> int:
    agent = agent_in(directory, args.agent) if directory.is_dir() else directory
    logger = log.get_logger()
    report = run_vm_test(
        agent,
        Cache.default(),
        lambda line: logger.info(line),
        port_name=args.port_name or AGENT_PORT,
        boot_deadline=args.boot_deadline or BOOT_DEADLINE,
    )
    result = report.as_dict() | {"mode": "initramfs"}
    _record(agent.parent / MANIFEST_NAME, result)
    print_json(result)
    if not report.passed:
        raise VmTestError("the agent failed in the VM: " + ", ".join(result["scenarios_failed"]))
    return 0
