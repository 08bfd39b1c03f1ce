"""`qga-builder run RECIPE...`: build one recipe here, or several as a matrix (commands.matrix)."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from builder import log, pipeline
from builder.commands import signing
from builder.commands.common import load_plan, overrides_from
from builder.commands.matrix import Matrix, child_arguments, matrix_log_dir, plan_jobs
from builder.engine import Engine
from builder.errors import DockerUnavailableError, UsageError
from builder.host.cache import Cache
from builder.outputs import output_dir


def cmd_run(args: argparse.Namespace) -> int:
    if len(args.recipes) > 1 or args.jobs or args.output_root:
        return _run_matrix(args)
    if args.engine and len(args.engine) > 1:
        raise UsageError(
            f"--engine is given {len(args.engine)} times for one recipe: one build runs on one "
            "engine",
            hint="give one --engine; several spread a matrix (several RECIPEs, or --jobs N) "
            "over them",
        )
    overrides = overrides_from(args)
    plan, text = load_plan(
        args.recipes[0],
        overrides,
        locked=args.locked,
        allow_outside_project=args.allow_outside_project,
    )
    output_dir.check_replaceable(plan.output_dir)
    cache = Cache.default()
    # The signing keys are checked first: a key that cannot sign stops the run before Docker.
    code_signer = signing.code_signer_for(args)
    with (
        signing.signer_for(args) as signer,
        signing.attested(args) as attester,
        Engine(args.engine[0] if args.engine else None) as engine,
        peers(args) as others,
    ):
        result = pipeline.run(
            plan,
            engine,
            cache,
            text,
            use_cache=not args.no_cache,
            use_ccache=not args.no_ccache,
            peer_engines=others,
            signer=signer,
            attester=attester,
            code_signer=code_signer,
        )
    logger = log.get_logger()
    for artifact in result.artifacts:
        logger.info("artifact", name=artifact.name, sha256=artifact.sha256, size=artifact.size)
    logger.info("done", output=str(result.output_dir))
    return 0


@contextmanager
def peers(args: argparse.Namespace) -> Iterator[tuple[Engine, ...]]:
    """The matrix's other engines that answer (images are copied from them); one that does
    not is only left out: it is not the engine this build runs on."""
    with ExitStack() as stack:
        found = []
        for endpoint in args.peer_engine:
            try:
                found.append(stack.enter_context(Engine(endpoint)))
            except DockerUnavailableError as exc:
                log.get_logger().warning("engine left out as a source of images", error=exc.message)
        yield tuple(found)


def _run_matrix(args: argparse.Namespace) -> int:
    if args.output is not None:
        raise UsageError(
            "--output names one recipe's directory; a matrix writes to --output-root DIR",
            hint="use --output-root DIR: each recipe goes to DIR/<recipe name>/",
        )
    root: Path = (args.output_root or Path("out")).absolute()
    overrides = overrides_from(args, output=False)
    # Every recipe is validated, and every output directory checked, before the first builds.
    named = []
    for path in args.recipes:
        plan, _ = load_plan(
            path, overrides, locked=args.locked, allow_outside_project=args.allow_outside_project
        )
        output_dir.check_replaceable(root / plan.recipe_name)
        named.append((path, plan.recipe_name))
    jobs = plan_jobs(named, root)
    # Each build checks the key again and signs its own output.
    signing_env = signing.check_signing_key(args)
    engines: list[str | None] = list(args.engine) if args.engine else [None]
    for endpoint in engines:  # each must answer now, not after the first builds
        Engine(endpoint).close()
    parallel = args.jobs or len(engines)
    log.get_logger().info(
        "matrix", recipes=len(jobs), jobs=parallel, engines=len(engines), output_root=str(root)
    )
    run_id = uuid.uuid4().hex[:12]
    matrix = Matrix(
        jobs,
        engines,
        parallel,
        child_arguments(args),
        matrix_log_dir(Cache.default().runs, run_id),
        args.fail_fast,
        child_env=signing_env,
    )
    return matrix.run()
