"""`qga-builder base debootstrap`: make a base image on this host, without any registry."""

from __future__ import annotations

import argparse

from builder import log
from builder.engine import Engine
from builder.formats.checksums import sha256_json
from builder.host import debian
from builder.stages.base_image import (
    LABEL_BASE_INPUTS,
    debootstrap_inputs,
    debootstrap_tag,
    make_debootstrap_base,
)


def cmd_base_debootstrap(args: argparse.Namespace) -> int:
    family = f"qga-builder/base:{args.suite}-{args.variant}"
    mirror = args.mirror or debian.host_mirror()
    inputs = debootstrap_inputs(args.suite, args.variant, mirror)
    # By default the tag recipes with `debootstrap:` look for (it covers every input).
    reference = args.tag or debootstrap_tag(family, inputs)
    logger = log.get_logger(reference=reference)
    with Engine() as engine:
        existing = engine.inspect_image(reference)
        if existing and not args.force:
            same = existing.labels.get(LABEL_BASE_INPUTS) == sha256_json(inputs)
            logger.info(
                "base image exists; pass --force to remake it",
                image=existing.id[:19],
                inputs="unchanged" if same else "differ",
            )
            return 0
        image_id = make_debootstrap_base(
            engine,
            suite=args.suite,
            variant=args.variant,
            mirror=mirror,
            reference=reference,
            log=lambda line: logger.info(line),
        )
    logger.info("base image ready", image=image_id)
    return 0
