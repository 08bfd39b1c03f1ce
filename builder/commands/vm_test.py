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


def cmd_vm_test(args: argparse.Namespace) -> int:
    directory: Path = args.output_dir
    agent = directory / args.agent if directory.is_dir() else directory
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
