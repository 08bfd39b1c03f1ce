"""What several commands share: a recipe file turned into a plan, and printing results."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from builder.config.overrides import Overrides, apply_overrides
from builder.config.plan import Plan, make_plan
from builder.config.recipe import load_recipe_data, validate_recipe
from builder.errors import UsageError


def load_plan(
    path: Path, overrides: Overrides, *, locked: bool = False, allow_outside_project: bool = False
) -> tuple[Plan, str]:
    """Recipe file -> validated recipe (overrides applied first) -> plan; also the recipe text."""
    data, raw = load_recipe_data(path)
    recipe = validate_recipe(apply_overrides(data, overrides), str(path), overrides.blame())
    plan = make_plan(
        recipe,
        path,
        raw,
        output_dir=overrides.output,
        overrides=overrides.recorded(),
        locked=locked,
        allow_outside_project=allow_outside_project,
    )
    return plan, raw.decode("utf-8")


def overrides_from(args: argparse.Namespace, *, output: bool = True) -> Overrides:
    if output:
        require_single(args.recipes, "--output", args.output)
    return Overrides(
        qemu_ref=args.qemu_ref,
        source=args.source,
        base_image=args.base_image,
        output=args.output if output else None,
    )


def require_single(paths: Sequence[Path], option: str, given: object) -> None:
    if given is not None and len(paths) > 1:
        raise UsageError(f"{option} applies to one recipe; {len(paths)} were given")


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")
