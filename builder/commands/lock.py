"""`qga-builder lock RECIPE...`: write RECIPE.lock, every package of the recipe's build image."""

from __future__ import annotations

import argparse

from builder import log
from builder.boxes.build_box import build_container
from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.config.plan import Plan
from builder.engine import Engine
from builder.errors import OutputError
from builder.host.cache import Cache
from builder.host.files import replace_file
from builder.log import Progress
from builder.stages import series, toolchain
from builder.stages.base_image import ensure_base
from builder.stages.build_image import ensure_build_image
from builder.stages.source import source_version


def cmd_lock(args: argparse.Namespace) -> int:
    with Engine() as engine:
        for path in args.recipes:
            plan, _ = load_plan(path, Overrides(), allow_outside_project=args.allow_outside_project)
            refuse_foreign(plan)
            packages = toolchain_packages(plan, engine, Cache.default())
            replace_file(plan.lock_path, toolchain.format_lock(packages).encode())
            log.get_logger().info("lock written", lock=str(plan.lock_path), packages=len(packages))
    return 0


def refuse_foreign(plan: Plan) -> None:
    """RECIPE.lock is replaced only when it is a lock the tool wrote."""
    path = plan.lock_path
    if path.is_symlink() or (path.exists() and not _starts_with_header(path)):
        raise OutputError(
            f"{path} exists and is not a qga-builder lock file; refusing to replace it",
            hint="move it away, or rename the recipe",
        )


def _starts_with_header(path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(toolchain.HEADER)).decode(errors="replace") == toolchain.HEADER


def toolchain_packages(
    plan: Plan, engine: Engine, cache: Cache, *, fresh: bool = False
) -> dict[str, str]:
    """The packages of the image a plan builds in (made if missing; `fresh`: made anew)."""
    progress = Progress(total=4)
    with progress.step("series", log_output=False) as output:
        # The plan `run` builds (the image may be the source's series'), resolved as `plan` does.
        plan = series.resolve_plan(plan, source_version(plan.source, cache, output.line))
        image = plan.image
    with progress.step("base-image", log_output=False) as output:
        base = ensure_base(engine, image.base, cache, output.line)
    with progress.step("build-image", log_output=False) as output:
        built = ensure_build_image(
            engine, image, base.image_id, plan.recipe_name, cache, output, fresh=fresh
        )
    with (
        progress.step("toolchain", log_output=False) as output,
        build_container(engine, plan, built.image_id) as box,
    ):
        return toolchain.read_packages(box, output)[1]
