"""What each CLI command does; argument parsing and exit codes live in `builder.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder import log, output
from builder.cache import Cache
from builder.cli import print_json, require_single
from builder.errors import BuilderError
from builder.overrides import Overrides, apply_overrides
from builder.plan import Plan, make_plan
from builder.recipe import dump_schema, load_recipe_data, validate_recipe


def load_plan(path: Path, overrides: Overrides, *, locked: bool = False) -> tuple[Plan, str]:
    """Recipe file -> validated recipe (overrides applied first) -> plan; also the recipe text."""
    data, raw = load_recipe_data(path)
    recipe = validate_recipe(apply_overrides(data, overrides), str(path))
    plan = make_plan(
        recipe,
        path,
        raw,
        output_dir=overrides.output,
        overrides=overrides.recorded(),
        locked=locked,
    )
    return plan, raw.decode("utf-8")


def _overrides_from(args: argparse.Namespace) -> Overrides:
    require_single(args.recipes, "--output", args.output)
    return Overrides(
        qemu_ref=args.qemu_ref, source=args.source, base_image=args.base_image, output=args.output
    )


def cmd_run(args: argparse.Namespace) -> int:
    from builder import pipeline
    from builder.engine import Engine

    overrides = _overrides_from(args)
    # Every recipe is validated before the first one builds.
    plans = [load_plan(path, overrides, locked=args.locked) for path in args.recipes]
    for plan, _ in plans:  # refuse a directory the tool did not write before any work
        output.check_replaceable(plan.output_dir)
    engine = Engine()
    cache = Cache.default()
    for plan, text in plans:
        result = pipeline.run(plan, engine, cache, text)
        _print_result(result)
    return 0


def _print_result(result: object) -> None:
    from builder.pipeline import RunResult

    assert isinstance(result, RunResult)
    logger = log.get_logger()
    for artifact in result.artifacts:
        logger.info("artifact", name=artifact.name, sha256=artifact.sha256, size=artifact.size)
    logger.info("done", output=str(result.output_dir))


def cmd_validate(args: argparse.Namespace) -> int:
    failures: list[BuilderError] = []
    for path in args.recipes:
        try:
            load_plan(path, Overrides())
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
    overrides = _overrides_from(args)
    for path in args.recipes:
        plan, _ = load_plan(path, overrides)
        summary = plan.summary()
        summary["cache_key"] = plan.cache_key
        summary["stages"] = list(_stages(plan))
        print_json(summary)
    return 0


def _stages(plan: Plan) -> tuple[str, ...]:
    from builder.pipeline import stages_for

    return stages_for(plan)


def cmd_schema(args: argparse.Namespace) -> int:
    print(dump_schema())
    return 0


def cmd_base_debootstrap(args: argparse.Namespace) -> int:
    from builder.baseimage import make_debootstrap_base
    from builder.engine import Engine

    engine = Engine()
    reference = args.tag or f"qga-builder/base:{args.suite}-{args.variant}"
    existing = engine.image_id(reference)
    logger = log.get_logger(reference=reference)
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


def cmd_clean(args: argparse.Namespace) -> int:
    from builder import cleanup
    from builder.engine import Engine

    removed = cleanup.clean(
        Engine(),
        Cache.default(),
        output_root=args.output_root,
        keep=args.keep,
        dry_run=args.dry_run,
    )
    verb = "would remove" if args.dry_run else "removed"
    logger = log.get_logger()
    for kind, items in removed.items():
        for item in items:
            logger.info(verb, kind=kind, item=item)
    logger.info("clean done", **{kind: len(items) for kind, items in removed.items()})
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from builder import pipeline, verify
    from builder.engine import Engine

    target: Path = args.target
    if target.is_dir():
        against = args.against or target / verify.SUMS
        comparison = verify.check_directory(target, against)
        summary = verify.summarize(comparison, {"checked": target}, None)
        verify.conclude(comparison, f"{target} against {against}", None, None, summary)
        return 0
    overrides = Overrides(
        qemu_ref=args.qemu_ref, source=args.source, base_image=args.base_image, output=None
    )
    plan, text = load_plan(target, overrides, locked=args.locked)
    root = (args.output or Path("out") / f"{plan.recipe_name}.verify").absolute()
    verify.claim_directory(root)
    engine, cache = Engine(), Cache.default()
    if args.against:
        expected = verify.read_sums(args.against)
        result = pipeline.run(replace(plan, output_dir=root / "build"), engine, cache, text)
        comparison = verify.compare(expected, verify.read_sums(result.output_dir / verify.SUMS))
        summary = verify.summarize(comparison, {"build": result.output_dir}, None)
        verify.conclude(
            comparison, f"build against {args.against}", None, root / "verify.json", summary
        )
        return 0
    builds: dict[str, Path] = {}
    for variation in verify.variations(engine.run_id):
        tag = variation.root.rsplit("/", 1)[-1][0]
        log.get_logger().info(
            f"verify build {tag}",
            root=variation.root,
            hostname=variation.hostname,
            umask=variation.umask,
        )
        result = pipeline.run(
            replace(plan, output_dir=root / tag),
            engine,
            cache,
            text,
            variation=variation,
            run_id=f"{tag}{engine.run_id}",
        )
        builds[tag] = result.output_dir
    first, second = builds["a"], builds["b"]
    comparison = verify.compare(
        verify.read_sums(first / verify.SUMS), verify.read_sums(second / verify.SUMS)
    )
    report = None
    if comparison.different:
        report = verify.diffoscope_report(
            first, second, comparison.different, root / "diffoscope.txt"
        )
    summary = verify.summarize(comparison, builds, report)
    verify.conclude(
        comparison, f"{plan.recipe_name} built twice", report, root / "verify.json", summary
    )
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from builder import pipeline, toolchain
    from builder.engine import Engine

    for path in args.recipes:
        plan, _ = load_plan(path, Overrides())
        packages = pipeline.toolchain_packages(plan, Engine(), Cache.default())
        plan.lock_path.write_text(toolchain.format_lock(packages))
        log.get_logger().info("lock written", lock=str(plan.lock_path), packages=len(packages))
    return 0


def cmd_vm_test(args: argparse.Namespace) -> int:
    from builder import vmtest
    from builder.manifest import MANIFEST_NAME, write_json

    directory: Path = args.output_dir
    agent = directory / args.agent if directory.is_dir() else directory
    logger = log.get_logger()
    report = vmtest.run_vm_test(
        agent,
        Cache.default(),
        lambda line: logger.info(line),
        port_name=args.port_name,
        boot_deadline=args.boot_deadline,
    )
    result = report.as_dict()
    manifest_path = agent.parent / MANIFEST_NAME
    if manifest_path.is_file():
        import json

        manifest = json.loads(manifest_path.read_text())
        manifest["vm_test"] = result
        write_json(manifest_path, manifest)
    print_json(result)
    if not report.passed:
        from builder.errors import VmTestError

        raise VmTestError(
            "the agent failed in the VM: " + ", ".join(result["scenarios_failed"]),
        )
    return 0
