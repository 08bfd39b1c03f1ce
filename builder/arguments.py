"""The command line's grammar: every command, its options, and the global options that every
parser level takes (defined once, accepted anywhere on the line). `builder.cli` runs it."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder import __version__
from builder.agent.contract_in_vm import BOOT_DEADLINE
from builder.agent.guest_test import SCENARIOS
from builder.arguments_upkeep import add_bump, add_clean, add_prepare
from builder.config.settings import MIRROR_ENV
from builder.host.virtual_machine import AGENT_PORT
from builder.option_parser import (
    GlobalOptionAction,
    GlobalOptions,
    Parser,
    Subcommands,
    TopParser,
    add_authenticode_options,
    add_signing_options,
    at_least,
    lazy_handler,
    positive_seconds,
)


def _common(seen: GlobalOptions) -> argparse.ArgumentParser:
    """The global options, defined once: every parser level takes them."""
    common = Parser(add_help=False)
    common.add_argument(
        "--log-format",
        choices=("console", "json"),
        action=GlobalOptionAction,
        seen=seen,
        default=argparse.SUPPRESS,
        help="console (default, for people) or json (one object per line, for CI)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        nargs=0,
        action=GlobalOptionAction,
        seen=seen,
        default=argparse.SUPPRESS,
        help="debug messages too, and a traceback on an internal error (anywhere on the line)",
    )
    return common


def _recipes_options() -> argparse.ArgumentParser:
    """Options of the commands that read recipes (and only those: elsewhere they do nothing)."""
    recipes = Parser(add_help=False)
    recipes.add_argument(
        "--allow-outside-project",
        action="store_true",
        help="let recipes use a Dockerfile or patches outside their project (the nearest "
        "directory above the recipe with .git or pyproject.toml)",
    )
    return recipes


def _overrides(parser: argparse.ArgumentParser, output_help: str) -> None:
    group = parser.add_argument_group("overrides (recorded in the manifest)")
    group.add_argument("--qemu-ref", metavar="TAG", help="build this QEMU git tag (upstream URL)")
    group.add_argument(
        "--source", metavar="PATH", type=Path, help="build this local QEMU tree or tarball"
    )
    group.add_argument(
        "--base-image",
        metavar="REF",
        help="start the build image from REF, pinned by digest (name:tag@sha256:<64 hex>)",
    )
    group.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        help=output_help,
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
        help="fail before compiling if the build image's packages differ from the recipe's "
        "lock file (recipes/x.yaml: recipes/x.lock, written by `lock`)",
    )


def build_parser() -> argparse.ArgumentParser:
    seen = GlobalOptions()
    common = _common(seen)
    recipes = _recipes_options()
    parser = TopParser(
        seen,
        prog="qga-builder",
        description="Build patched QEMU Guest Agent release artifacts from YAML recipes.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"qga-builder {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )

    for add in (
        _add_run,
        _add_verify,
        _add_release,
        _add_vm_test,
        _add_lock,
        _add_validate,
        _add_plan,
        _add_schema,
        _add_base,
        _add_patches,
        add_prepare,
        add_bump,
        add_clean,
    ):
        add(sub, common, recipes)
    return parser


def _add_run(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "run", parents=[common, recipes], help="build the artifacts of one or more recipes"
    )
    p.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE")
    _overrides(p, "write the artifacts to DIR (default: out/<recipe name>; one recipe only)")
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
        type=at_least(1),
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
        "several recipes over several engines (default: DOCKER_HOST, else "
        "unix:///var/run/docker.sock)",
    )
    # A matrix's builds are told the other engines: images one holds are copied, not made again.
    matrix.add_argument("--peer-engine", action="append", default=[], help=argparse.SUPPRESS)
    matrix.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop every other build as soon as one fails",
    )
    add_signing_options(p, "the output's SHA256SUMS (then listing every file of it)")
    add_authenticode_options(p)
    p.set_defaults(handler=lazy_handler("run", "cmd_run"))


def _add_verify(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "verify",
        parents=[common, recipes],
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
    p.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="only check DIR, without Docker: SHA256SUMS.asc must be a good signature of "
        "SHA256SUMS by this OpenPGP public key (armored or binary), every line of SHA256SUMS "
        "must match its file, and DIR must hold nothing else",
    )
    p.add_argument(
        "--cosign-key",
        type=Path,
        metavar="FILE",
        help="with DIR: also check its signed provenance, provenance.intoto.jsonl, as "
        "`cosign verify-blob-attestation --key FILE` does: each envelope signed by this PEM "
        "public key, each subject in DIR with that sha256",
    )
    _overrides(
        p,
        "with a RECIPE: write both builds and verify.json to DIR (default: "
        "out/<recipe name>.verify; new, empty, or a directory verify made before)",
    )
    _locked(p)
    _no_ccache(p)
    p.set_defaults(handler=lazy_handler("verify", "cmd_verify"))


def _add_release(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
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
    p.add_argument(
        "--input-public-key",
        type=Path,
        metavar="FILE",
        help="require every input to be signed by this OpenPGP public key (its "
        "SHA256SUMS.asc checked as `verify --public-key` checks it); without it an input's "
        "signature is not checked (its SHA256SUMS is, against its files)",
    )
    add_signing_options(p, "the release's SHA256SUMS")
    p.set_defaults(handler=lazy_handler("release", "cmd_release"))


def _add_vm_test(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
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
        help=f"comma-separated, of: {', '.join(SCENARIOS)} (default: all; not with --fast)",
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
        help=f"with --fast: name of the host's virtserialport (default {AGENT_PORT}, the name "
        "the guest looks for)",
    )
    p.add_argument(
        "--boot-deadline",
        type=positive_seconds,
        metavar="SECONDS",
        help=f"with --fast: how long to wait for the agent's first answer (default "
        f"{BOOT_DEADLINE:g})",
    )
    p.set_defaults(handler=lazy_handler("vm_test", "cmd_vm_test"))


def _add_lock(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "lock",
        parents=[common, recipes],
        help="write the recipe's lock file beside it (recipes/x.yaml: recipes/x.lock): every "
        "package of the recipe's build image",
    )
    p.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE")
    p.set_defaults(handler=lazy_handler("lock", "cmd_lock"))


def _add_validate(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "validate",
        parents=[common, recipes],
        help="check recipes without building: YAML, fields, paths, and the sha256 of every "
        "local file they pin",
    )
    p.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE")
    p.set_defaults(handler=lazy_handler("inspect", "cmd_validate"))


def _add_plan(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "plan",
        parents=[common, recipes],
        help="print the resolved plan: what `run` builds (a dry run)",
        description="Print the resolved plan of each RECIPE: what `run` builds, from what, on "
        "what base, with which patches and configure flags, and the cache key the run's "
        "manifest.json will record. The source's QEMU version settles the series' choices: "
        "it is read from a local tree or tarball, a source a run already checked, or the "
        "release a pinned Debian version packages; otherwise the source is fetched as `run` "
        "fetches it (and kept in the cache), and a fetch that fails is an error.",
    )
    p.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON document: an object for one RECIPE, an array of them in the order "
        "given for several (nothing printed when one fails)",
    )
    _overrides(p, "the output directory the plan names (default: out/<recipe name>)")
    p.set_defaults(handler=lazy_handler("inspect", "cmd_plan"))


def _add_schema(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("schema", parents=[common], help="print the recipe JSON Schema")
    p.set_defaults(handler=lazy_handler("inspect", "cmd_schema"))


def _add_base(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("base", parents=[common], help="make a base image without a registry")
    base_sub = p.add_subparsers(dest="base_command", required=True, metavar="KIND")
    b = base_sub.add_parser(
        "debootstrap",
        parents=[common],
        help="debootstrap a Debian suite on this host and `docker import` it",
    )
    b.add_argument("--suite", required=True, help="Debian suite, e.g. trixie")
    b.add_argument("--variant", default="minbase", choices=("minbase", "buildd"))
    b.add_argument(
        "--mirror",
        help=f"Debian mirror URL (default: {MIRROR_ENV}, else this host's apt mirror)",
    )
    b.add_argument(
        "--tag",
        help="image reference (default: qga-builder/base:SUITE-VARIANT-HASH, HASH of the suite, "
        "variant and mirror: the tag recipes with `debootstrap:` look for)",
    )
    b.add_argument("--force", action="store_true", help="remake it even if it exists")
    b.set_defaults(handler=lazy_handler("base", "cmd_base_debootstrap"))


def _add_patches(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("patches", parents=[common], help="our patch sets for QEMU series")
    patches_sub = p.add_subparsers(dest="patches_command", required=True, metavar="ACTION")
    b = patches_sub.add_parser(
        "check",
        parents=[common],
        help="name a source's QEMU series and patch set, and try each patch on it (no Docker)",
    )
    b.add_argument("source", type=Path, metavar="SOURCE", help="a QEMU source tarball or tree")
    b.set_defaults(handler=lazy_handler("patches", "cmd_patches_check"))
