"""`qga-builder base debootstrap`: make a base image on this host, without any registry."""

from __future__ import annotations

import argparse

from builder import log
from builder.engine import Engine
from builder.stages.base_image import make_debootstrap_base


def cmd_base_debootstrap(args: argparse.Namespace) -> int:
    reference = args.tag or f"qga-builder/base:{args.suite}-{args.variant}"
    logger = log.get_logger(reference=reference)
    with Engine() as engine:
        existing = engine.image_id(reference)
        if existing and not args.force:
            logger.info("base image exists; pass --force to remake it", image=existing[:19])
            return 0
        image_id = make_debootstrap_base(
            engine,
            suite=args.suite,
            variant=args.variant,
            mirror=args.mirror,
            reference=reference,
            log=lambda line: logger.info(line),
        )
    logger.info("base image ready", image=image_id)
    return 0
