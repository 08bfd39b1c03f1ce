"""`qga-builder patches check SOURCE`: which QEMU series a source is, which of our patch sets
serves it, and whether each patch applies (a trial on scratch copies; no Docker)."""

from __future__ import annotations

import argparse

from builder.commands.common import print_json
from builder.errors import PatchError
from builder.stages import series


def cmd_patches_check(args: argparse.Namespace) -> int:
    source = args.source
    version = series.read_version(source)
    name = series.series_of(version)
    patches = series.patch_set(name)
    trials = series.try_patches(source, patches)
    print_json(
        {
            "source": str(source),
            "version": version,
            "series": name,
            "patch_set": f"patches/qemu-{name}/",
            "patches": [
                {"name": t.patch.name, "sha256": t.sha256, "applies": t.applies, "detail": t.detail}
                for t in trials
            ],
        }
    )
    failed = [t for t in trials if not t.applies]
    if failed:
        raise PatchError(
            f"QEMU {version}: "
            + "; ".join(f"{t.patch.name} does not apply: {t.detail}" for t in failed),
            hint=f"the patch set patches/qemu-{name}/ must be made for this source",
        )
    return 0
