"""`qga-builder run RECIPE...`: build each recipe into its output directory."""

from __future__ import annotations

import argparse

from builder import log, pipeline
from builder.commands.common import load_plan, overrides_from
from builder.engine import Engine
from builder.host.cache import Cache
from builder.stages import output_dir


def cmd_run(args: argparse.Namespace) -> int:
    overrides = overrides_from(args)
    # Every recipe is validated, and every output directory checked, before the first builds.
    plans = [
        load_plan(
            path, overrides, locked=args.locked, allow_outside_project=args.allow_outside_project
        )
        for path in args.recipes
    ]
    for plan, _ in plans:
        output_dir.check_replaceable(plan.output_dir)
    cache = Cache.default()
    with Engine() as engine:
        for plan, text in plans:
            result = pipeline.run(
                plan,
                engine,
                cache,
                text,
                use_cache=not args.no_cache,
                use_ccache=not args.no_ccache,
            )
            logger = log.get_logger()
            for artifact in result.artifacts:
                logger.info(
                    "artifact", name=artifact.name, sha256=artifact.sha256, size=artifact.size
                )
            logger.info("done", output=str(result.output_dir))
    return 0
