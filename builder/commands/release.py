"""`qga-builder release DIR... --output DIR`: the fan-in of a CI matrix. Each DIR is one run's
output directory (one recipe, built on its own machine); each is checked (its SHA256SUMS, manifest
and provenance against its files; with --input-public-key, its signature first), and they are
merged into one release directory with one SHA256SUMS and the provenance statements bundled,
signed with --signing-key or --signing-key-id. Nothing is written until every input passed.
"""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path

from builder.commands import signing
from builder.errors import InputError, UsageError
from builder.formats.manifest import SIGNATURE_NAME, SUMS_NAME
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
    logger = get_logger()
    with (
        signing.signer_for(args) as signer,  # checked before any input is read
        signing.optional_public_key(args.input_public_key) as key,
    ):
        attester = signing.attester_for(args)
        inputs = [read_input(path, key) for path in args.inputs]
        try:
            merged = merge(inputs)
        except Problem as exc:
            raise InputError(
                f"release inputs conflict: {exc}",
                hint="each file name must mean one file: rename the artifact in one recipe, or "
                "leave one of the inputs out",
            ) from None
        if key is not None:
            logger.info("every input is signed by the key given", fingerprint=key.fingerprint)
        with OutputDir(output, uuid.uuid4().hex[:12], log=logger.info) as out:
            record = signer.record() if signer is not None else {}
            record |= attester.record() if attester is not None else {}
            digests = write_release(out.staging, inputs, merged, record or None, attester)
            if signer is not None:
                signer.sign_file(out.staging / SUMS_NAME, out.staging / SIGNATURE_NAME)
            out.publish()
    for name, artifact in sorted(merged.artifacts.items()):
        logger.info("artifact", name=name, sha256=artifact.sha256, size=artifact.size)
    logger.info(
        "release written",
        output=str(output),
        recipes=sorted(each.recipe for each in inputs),
        files=len(digests),
        signed_by=signer.fingerprint if signer is not None else None,
    )
    return 0
