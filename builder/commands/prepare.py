"""`qga-builder prepare RECIPE...`: fetch and make, ahead of the runs, everything the recipes'
runs take from the network: the QEMU source, the base and build images, the tool's own images
their stages use (packager, wine) and vm-test's guest disks. Nothing is compiled.

For a CI job's warm-up step, a machine about to go offline (air-gapped builds), or a test
session that prepares the later tests' images while the first ones run. Everything lands where a
run looks for it, under the same locks, so a run may start while `prepare` is still working."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from builder import log
from builder.agent.guest_test import GUEST_OF, SCENARIOS
from builder.boxes import wine_box
from builder.caches import arm64_guest, guest_image
from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.config.plan import Plan
from builder.engine import Engine
from builder.host import virtual_machine as vm
from builder.host.cache import Cache
from builder.log import Progress, StepOutput
from builder.stages import package, series
from builder.stages.base_image import ensure_base
from builder.stages.build_image import ensure_build_image
from builder.stages.source import prepare_source, source_version

Make = Callable[[StepOutput], str]  # does one thing, says what it holds now


@dataclass(frozen=True)
class Item:
    """One thing to have ready: its name (the same thing twice is made once) and its maker."""

    name: str
    make: Make


def cmd_prepare(args: argparse.Namespace) -> int:
    cache = Cache.default()
    # Every recipe is read before anything is fetched: a bad one stops the command at once.
    plans = [
        load_plan(path, Overrides(), allow_outside_project=args.allow_outside_project)[0]
        for path in args.recipes
    ]
    with Engine() as engine:
        items: dict[str, Item] = {}
        for plan in plans:
            for item in items_for(plan, engine, cache, every_guest=args.vm_test_guests):
                items.setdefault(item.name, item)
        progress = Progress(total=len(items))
        logger = log.get_logger()
        for item in items.values():
            with progress.step(item.name, log_output=False) as output:
                logger.info(item.make(output), item=item.name)
    seconds = round(sum(progress.timings.values()), 1)
    log.get_logger().info("prepared", items=len(items), seconds=seconds)
    return 0


def items_for(plan: Plan, engine: Engine, cache: Cache, *, every_guest: bool) -> list[Item]:
    """What a run of `plan` takes from the network, in the order the run needs it."""

    def source(output: StepOutput) -> str:
        prepared = prepare_source(plan.source, cache, output.line)
        return f"source {prepared.archive.name}"

    def images(output: StepOutput) -> str:
        resolved = series.resolve_plan(plan, source_version(plan.source, cache, output.line))
        base = ensure_base(engine, resolved.image.base, cache, output.line)
        built = ensure_build_image(
            engine, resolved.image, base.image_id, resolved.recipe_name, cache, output
        )
        return f"build image {built.tag}"

    items = [Item(f"source {plan.recipe_name}", source), Item(f"images {plan.recipe_name}", images)]
    if plan.package is not None:
        items.append(Item("packager image", lambda o: package.BOX.image(engine, cache, o).tag))
    if any(a.kind == "msi" for a in plan.artifacts):
        items.append(Item("wine image", lambda o: wine_box.BOX.image(engine, cache, o).tag))
    debs = plan.package is not None and "deb" in plan.package.kinds
    if plan.arch.cross:  # one guest for another machine's agent (`vm-test` boots it too)
        if debs and (plan.vm_test or every_guest):
            items.append(Item(f"{plan.arch.name} guest", _arm64_guest(engine, cache)))
    elif plan.vm_test and debs:
        scenarios = SCENARIOS if every_guest else ("systemd",)  # the stage boots one guest
        for init in sorted({GUEST_OF.get(name, "systemd") for name in scenarios}):
            items.append(Item(f"{init} guest", _guest(engine, cache, init)))
    elif plan.vm_test:  # no .deb: the stage's fast check (a kernel and busybox from Debian)
        items.append(Item("fast-check VM", _fast_vm(cache)))
    return items


def _guest(engine: Engine, cache: Cache, init: str) -> Make:
    def make(output: StepOutput) -> str:
        guest = guest_image.ensure_guest(engine, cache, init, output)
        return f"{init} guest disk {guest.root}"

    return make


def _arm64_guest(engine: Engine, cache: Cache) -> Make:
    def make(output: StepOutput) -> str:
        return f"arm64 guest disk {arm64_guest.ensure_arm64_guest(engine, cache, output).root}"

    return make


def _fast_vm(cache: Cache) -> Make:
    def make(output: StepOutput) -> str:
        return f"kernel {vm.prepare(vm.DEFAULT_ASSETS, cache, output.line).kernel_version}"

    return make
