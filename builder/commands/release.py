"""`qga-builder release DIR... --output DIR`: the fan-in of a CI matrix. Each DIR is one run's
output directory (one recipe, built on its own machine); each is checked (its SHA256SUMS, manifest
and provenance against its files), and they are merged into one release directory with one
SHA256SUMS and the provenance statements bundled. Nothing is written until every input passed.
"""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path

from builder.errors import InputError, UsageError
from builder.formats.release import Problem, merge
from builder.log import get_logger
from builder.outputs import output_dir
from builder.outputs.output_dir import OutputDir
from builder.outputs.release_dir import write_release
from builder.outputs.release_inputs import read_input


def check_paths(inputs: list[Path], output: Path) -> None:
    """Refuse an input named twice and an output that is, holds or lies in an input."""
    seen: dict[Path, Path] = {}
    for given in inputs:
        path = Path(os.path.normpath(given.absolute()))
        if path in seen:
            raise UsageError(f"release input {given} is given twice")
        seen[path] = given
        if path == output or path in output.parents or output in path.parents:
            raise UsageError(
                f"release input {given} and the output directory {output} overlap",
                hint="write the release outside the input directories, e.g. --output release",
            )


def cmd_release(args: argparse.Namespace) -> int:
    output = output_dir.normalized(args.output)
    check_paths(args.inputs, output)
    output_dir.check_replaceable(output)  # before reading gigabytes
    inputs = [read_input(path) for path in args.inputs]
    try:
        merged = merge(inputs)
    except Problem as exc:
        raise InputError(
            f"release inputs conflict: {exc}",
            hint="each file name must mean one file: rename the artifact in one recipe, or "
            "leave one of the inputs out",
        ) from None
    logger = get_logger()
    with OutputDir(output, uuid.uuid4().hex[:12], log=logger.info) as out:
        digests = write_release(out.staging, inputs, merged)
        out.publish()
    for name, artifact in sorted(merged.artifacts.items()):
        logger.info("artifact", name=name, sha256=artifact.sha256, size=artifact.size)
    logger.info(
        "release written",
        output=str(output),
        recipes=sorted(each.recipe for each in inputs),
        files=len(digests),
    )
    return 0
