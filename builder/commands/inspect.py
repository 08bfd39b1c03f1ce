"""`validate`, `plan` and `schema`: look at recipes without building anything."""

from __future__ import annotations

import argparse

from builder import log
from builder.commands.common import load_plan, overrides_from, print_json
from builder.config.overrides import Overrides
from builder.config.recipe import dump_schema
from builder.errors import BuilderError
from builder.pipeline import stage_names


def cmd_validate(args: argparse.Namespace) -> int:
    failures: list[BuilderError] = []
    for path in args.recipes:
        try:
            load_plan(path, Overrides(), allow_outside_project=args.allow_outside_project)
            log.get_logger().info("valid", recipe=str(path))
        except BuilderError as exc:
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        first = failures[0]
        raise type(first)("\n".join(exc.message for exc in failures))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    overrides = overrides_from(args)
    for path in args.recipes:
        plan, _ = load_plan(path, overrides, allow_outside_project=args.allow_outside_project)
        summary = plan.summary()
        summary["cache_key"] = plan.cache_key
        summary["stages"] = list(stage_names(plan))
        print_json(summary)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(dump_schema())
    return 0
