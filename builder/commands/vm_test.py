"""`qga-builder vm-test OUTPUT_DIR`: boot a built Linux agent in a VM and run the contract."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from builder import log
from builder.agent.contract_in_vm import run_vm_test
from builder.commands.common import print_json
from builder.errors import VmTestError
from builder.formats.manifest import MANIFEST_NAME
from builder.host.cache import Cache
from builder.host.files import replace_file

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


def cmd_vm_test(args: argparse.Namespace) -> int:
    directory: Path = args.output_dir
    agent = agent_in(directory, args.agent) if directory.is_dir() else directory
    logger = log.get_logger()
    report = run_vm_test(
        agent,
        Cache.default(),
        lambda line: logger.info(line),
        port_name=args.port_name,
        boot_deadline=args.boot_deadline,
    )
    result = report.as_dict()
    manifest_path = agent.parent / MANIFEST_NAME
    if manifest_path.is_file() and not manifest_path.is_symlink():
        manifest = json.loads(manifest_path.read_text())
        manifest["vm_test"] = result
        replace_file(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    print_json(result)
    if not report.passed:
        raise VmTestError("the agent failed in the VM: " + ", ".join(result["scenarios_failed"]))
    return 0
