"""`validate`, `plan` and `schema`: look at recipes without building anything."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from builder import log
from builder.commands.common import load_plan, overrides_from, print_json
from builder.config import settings
from builder.config.overrides import Overrides
from builder.config.plan import Plan, check_pinned_files
from builder.config.recipe import dump_schema
from builder.errors import BuilderError
from builder.host.cache import Cache
from builder.pipeline import stage_names
from builder.stages import series
from builder.stages.source import source_version


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
        documents.append(plan_document(plan, Cache(settings.current().cache_root)))
    if args.json:
        print_json(documents[0] if len(documents) == 1 else documents)
    else:
        sys.stdout.write("\n".join(plan_text(document) for document in documents))
    return 0


def resolved(plan: Plan, cache: Cache) -> Plan:
    """The plan `run` builds: resolved with the source's QEMU version (read, or fetched as the
    run would fetch it)."""
    logger = log.get_logger(recipe=plan.recipe_name)
    version = source_version(plan.source, cache, lambda line: logger.info(line))
    return series.resolve_plan(plan, version)


def plan_document(plan: Plan, cache: Cache) -> dict[str, Any]:
    """The resolved plan as `plan --json` prints it: what the run builds, the cache key its
    manifest will record."""
    plan = resolved(plan, cache)
    assert plan.resolution is not None
    summary = plan.summary()
    summary["qemu_version"] = plan.resolution.qemu_version
    summary["stages"] = list(stage_names(plan))
    return summary


def plan_text(document: dict[str, Any]) -> str:
    """The resolved plan for people: what is built from what, on what, with which patches."""
    image, source = document["image"], document["source"]
    base = image["base"]
    pin = (
        source.get("version")
        or source.get("tag")
        or source.get("url")
        or source.get("mirror_path")
        or source.get("path")
    )
    lines = [
        f"recipe      {document['recipe_name']} ({document['recipe_path']})",
        f"source      {source['kind']} {pin} -> QEMU {document['qemu_version']}",
        f"series      {document['resolution']['summary']}",
        f"base        {base['reference']}"
        + (f" (debootstrap {base['suite']} {base['variant']})" if base.get("suite") else ""),
        f"target      {document['target']} {document['architecture']}",
        f"image       {image['repository']} from {Path(image['dockerfile']).name}",
        "packages    " + (dict(image["build_args"]).get("PACKAGES") or "(the Dockerfile's)"),
        "patches     " + (", ".join(Path(p["path"]).name for p in document["patches"]) or "none"),
        "configure   " + (" ".join(document["configure_flags"]) or "(none)"),
        "artifacts   " + ", ".join(a["name"] for a in document["artifacts"]),
        f"output      {document['output_dir']}",
        f"stages      {' '.join(document['stages'])}",
        f"cache key   {document['cache_key']}",
    ]
    return "\n".join(lines) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    print(dump_schema())
    return 0
