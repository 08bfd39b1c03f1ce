"""Command line: `python -m builder COMMAND` (also installed as `qga-builder`).

This is the one place that turns errors into exit codes and messages; everything below raises.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from builder import __version__, log
from builder.errors import BuilderError, Interrupted

Handler = Callable[[argparse.Namespace], int]
INTERNAL_ERROR = 70  # EX_SOFTWARE
# A closed terminal (SIGHUP) ends a run as Ctrl-C and SIGTERM do: containers removed, no output.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-format",
        choices=("console", "json"),
        default="console",
        help="console (default, for people) or json (one object per line, for CI)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    common.add_argument(
        "--allow-outside-project",
        action="store_true",
        help="let recipes use a Dockerfile or patches outside their project (the nearest "
        "directory above the recipe with .git or pyproject.toml)",
    )
    return common


def _overrides(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("overrides (recorded in the manifest)")
    group.add_argument("--qemu-ref", metavar="TAG", help="build this QEMU git tag (upstream URL)")
    group.add_argument(
        "--source", metavar="PATH", type=Path, help="build this local QEMU tree or tarball"
    )
    group.add_argument("--base-image", metavar="REF", help="start the build image from REF")
    group.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        help="write the artifacts to DIR (default: out/<recipe name>)",
    )


def _no_ccache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-ccache",
        action="store_true",
        help="compile without the build-cache volume (ccache, and configured trees kept for"
        " reuse); the artifacts are the same either way",
    )


def _locked(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--locked",
        action="store_true",
        help="fail before compiling if the build image's packages differ from RECIPE.lock",
    )


def _handler(module: str, name: str) -> Handler:
    """A command's handler, imported when it runs (so `--help` stays fast)."""

    def handle(args: argparse.Namespace) -> int:
        imported = importlib.import_module(f"builder.commands.{module}")
        return int(getattr(imported, name)(args))

    return handle


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="qga-builder",
        description="Build patched QEMU Guest Agent release artifacts from YAML recipes.",
    )
    parser.add_argument("--version", action="version", version=f"qga-builder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="build the artifacts of one or more recipes")
    p.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE")
    _overrides(p)
    _locked(p)
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="build even when the artifact cache holds a run with the same inputs",
    )
    _no_ccache(p)
    matrix = p.add_argument_group("several recipes (a matrix: one process per recipe)")
    matrix.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="build up to N recipes at once (default: one per engine)",
    )
    matrix.add_argument(
        "--output-root",
        type=Path,
        metavar="DIR",
        help="write each recipe to DIR/<recipe name>/ (default: out)",
    )
    matrix.add_argument(
        "--engine",
        action="append",
        metavar="URL",
        help="a Docker engine to build on: unix:///PATH, tcp://HOST:PORT (TLS from "
        "DOCKER_CERT_PATH), ssh://USER@HOST, or a docker context name; repeat it to spread "
        "the recipes over several engines (default: DOCKER_HOST)",
    )
    # A matrix's builds are told the other engines: images one holds are copied, not made again.
    matrix.add_argument("--peer-engine", action="append", default=[], help=argparse.SUPPRESS)
    matrix.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop every other build as soon as one fails",
    )
    p.set_defaults(handler=_handler("run", "cmd_run"))

    p = sub.add_parser(
        "verify",
        parents=[common],
        help="build a recipe twice under varied conditions and compare every artifact; "
        "or compare a build or an output directory with a SHA256SUMS",
    )
    p.add_argument(
        "target",
        type=Path,
        metavar="RECIPE|DIR",
        help="a recipe to build, or an output directory to check",
    )
    p.add_argument(
        "--against",
        type=Path,
        metavar="SHA256SUMS",
        help="compare with this published checksum file instead of a second build",
    )
    _overrides(p)
    _locked(p)
    _no_ccache(p)
    p.set_defaults(handler=_handler("verify", "cmd_verify"))

    p = sub.add_parser(
        "release",
        parents=[common],
        help="check the output directories of several runs (one per recipe, e.g. CI jobs) and "
        "merge them into one release directory",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="DIR", help="a run's output directory")
    p.add_argument(
        "--output",
        required=True,
        type=Path,
        metavar="DIR",
        help="the release directory to write (new, empty, or a release this tool wrote)",
    )
    p.set_defaults(handler=_handler("release", "cmd_release"))

    p = sub.add_parser(
        "vm-test",
        parents=[common],
        help="install an output's packages in booted Debian guests and check the agent there",
    )
    p.add_argument(
        "output_dir",
        type=Path,
        metavar="OUTPUT_DIR",
        help="an output directory (with --fast, also the agent binary itself)",
    )
    p.add_argument(
        "--scenarios",
        metavar="LIST",
        help="comma-separated, of: systemd, no-port, replace, sysvinit, rpm (default: all)",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="instead: boot the bare agent in a busybox initramfs, started by hand (no package)",
    )
    p.add_argument(
        "--agent",
        default=None,
        help="with --fast: the agent's file name in OUTPUT_DIR (default: the static-elf "
        "artifact its manifest.json names, else qemu-ga-patched-static)",
    )
    p.add_argument(
        "--port-name",
        default="org.qemu.guest_agent.0",
        help="with --fast: name of the host's virtserialport (the guest looks for "
        "org.qemu.guest_agent.0)",
    )
    p.add_argument(
        "--boot-deadline",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="with --fast: how long to wait for the agent's first answer (default 90)",
    )
    p.set_defaults(handler=_handler("vm_test", "cmd_vm_test"))

    p = sub.add_parser(
        "lock",
        parents=[common],
        help="write RECIPE.lock: every package of the recipe's build image",
    )
    p.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE")
    p.set_defaults(handler=_handler("lock", "cmd_lock"))

    p = sub.add_parser("validate", parents=[common], help="check recipes without building")
    p.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE")
    p.set_defaults(handler=_handler("inspect", "cmd_validate"))

    p = sub.add_parser("plan", parents=[common], help="print what `run` would do (dry run)")
    p.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE")
    _overrides(p)
    p.set_defaults(handler=_handler("inspect", "cmd_plan"))

    p = sub.add_parser("schema", parents=[common], help="print the recipe JSON Schema")
    p.set_defaults(handler=_handler("inspect", "cmd_schema"))

    p = sub.add_parser("base", parents=[common], help="make a base image without a registry")
    base_sub = p.add_subparsers(dest="base_command", required=True, metavar="KIND")
    b = base_sub.add_parser(
        "debootstrap",
        parents=[common],
        help="debootstrap a Debian suite on this host and `docker import` it",
    )
    b.add_argument("--suite", required=True, help="Debian suite, e.g. trixie")
    b.add_argument("--variant", default="minbase", choices=("minbase", "buildd"))
    b.add_argument("--mirror", help="Debian mirror URL (default: this host's apt mirror)")
    b.add_argument("--tag", help="image reference (default: qga-builder/base:SUITE-VARIANT)")
    b.add_argument("--force", action="store_true", help="remake it even if it exists")
    b.set_defaults(handler=_handler("base", "cmd_base_debootstrap"))

    p = sub.add_parser("patches", parents=[common], help="our patch sets for QEMU series")
    patches_sub = p.add_subparsers(dest="patches_command", required=True, metavar="ACTION")
    b = patches_sub.add_parser(
        "check",
        parents=[common],
        help="name a source's QEMU series and patch set, and try each patch on it (no Docker)",
    )
    b.add_argument("source", type=Path, metavar="SOURCE", help="a QEMU source tarball or tree")
    b.set_defaults(handler=_handler("patches", "cmd_patches_check"))

    p = sub.add_parser("clean", parents=[common], help="remove what crashed runs left behind")
    p.add_argument(
        "--keep",
        type=int,
        default=2,
        metavar="N",
        help="build images to keep per Dockerfile and base (newest first; default 2)",
    )
    p.add_argument(
        "--repository",
        metavar="REPO",
        help="prune build images of this repository only (e.g. qga-builder/dockerfile.linux)",
    )
    p.add_argument(
        "--output-root",
        type=Path,
        default=Path("out"),
        metavar="DIR",
        help="where to look for stale staging directories (default: out)",
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(handler=_handler("clean", "cmd_clean"))
    return parser


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    # Ignore further signals while the first one unwinds: cleanup must be allowed to finish.
    for each in HANDLED_SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise Interrupted(signum)


def report_error(message: str, hint: str | None = None) -> None:
    if log.current_format() == "json":
        fields = {"hint": hint} if hint else {}
        log.get_logger().error(message, **fields)
    else:
        sys.stderr.write(f"qga-builder: error: {log.neutralize_lines(message)}\n")
        if hint:
            sys.stderr.write(f"  hint: {log.neutralize_lines(hint)}\n")
        sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    for each in HANDLED_SIGNALS:
        signal.signal(each, _raise_interrupted)
    from builder.engine import remove_live_containers

    verbose = False
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        verbose = args.verbose
        log.configure(args.log_format, args.verbose)
        handler: Handler = args.handler
        return handler(args)
    except BuilderError as exc:
        report_error(exc.message, exc.hint)
        return exc.exit_code
    except Interrupted as exc:
        remove_live_containers()
        name = signal.Signals(exc.signum).name
        report_error(f"interrupted by {name}; removed this run's containers and temporary files")
        return exc.exit_code
    except Exception as exc:  # a bug: say so in one message; -v shows the traceback
        if verbose:
            traceback.print_exc()
        report_error(
            f"internal error: {type(exc).__name__}: {exc}",
            hint="this is a bug in qga-builder; rerun with -v to see the traceback",
        )
        return INTERNAL_ERROR
    finally:
        remove_live_containers()
