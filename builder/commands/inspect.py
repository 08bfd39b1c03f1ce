"""`validate`, `plan` and `schema`: look at recipes without building anything."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from builder import log
from builder.commands.common import load_plan, overrides_from, print_json
from builder.config import settings
from builder.config.overrides import Overrides
from builder.config.plan import Plan, check_pinned_files
from builder.config.recipe import dump_schema
from builder.errors import BuilderError
from builder.pipeline import stage_names
from builder.stages import series
from builder.stages.source import known_version

# Why `plan` prints no cache key for a recipe that leaves its patches to the series.
KEY_AFTER_SOURCE = (
    "known once the source is here: its QEMU version picks the patch set, which the key "
    "covers (a run, or `lock`, fetches it; then `plan` prints the key)"
)


def cmd_validate(args: argparse.Namespace) -> int:
    failures: list[BuilderError] = []
    for path in args.recipes:
        try:
            plan, _ = load_plan(path, Overrides(), allow_outside_project=args.allow_outside_project)
            check_pinned_files(plan)
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
    """One JSON document: the plan's object for one recipe, an array of them for several
    (printed only when every recipe plans, so a failure leaves no half of a document)."""
    overrides = overrides_from(args)
    documents = []
    for path in args.recipes:
        plan, _ = load_plan(path, overrides, allow_outside_project=args.allow_outside_project)
        check_pinned_files(plan)
        documents.append(plan_document(plan, settings.current().cache_root))
    print_json(documents[0] if len(documents) == 1 else documents)
    return 0


def plan_document(plan: Plan, cache_root: Path) -> dict[str, Any]:
    """The plan as `plan` prints it, with the cache key the run's manifest will record."""
    summary = plan.summary()
    version = known_version(plan.source, cache_root) if plan.series_decides else None
    summary["cache_key"] = series.planned_key(plan, version)
    if summary["cache_key"] is None:
        summary["cache_key_note"] = KEY_AFTER_SOURCE
    if version:
        summary["qemu_version"] = version
    summary["stages"] = list(stage_names(plan))
    return summary


def cmd_schema(args: argparse.Namespace) -> int:
    print(dump_schema())
    return 0
