"""The grammar of the commands that keep a project's inputs and this machine in shape:
`prepare` (everything runs fetch, ahead of them), `bump` (pins to their newest verified
versions) and `clean` (what crashed runs left behind)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from builder.config import patterns
from builder.host.debian import KEYRING
from builder.option_parser import Subcommands, at_least, lazy_handler


def add_prepare(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "prepare",
        parents=[common, recipes],
        help="fetch and make what the recipes' runs take from the network (source, base and "
        "build images, the tool's images, vm-test's guests) without building",
        description="Everything a run of each RECIPE would fetch or make before compiling: the "
        "QEMU source, the base and build images (of the series the source is), the packager "
        "and wine images its stages use, and the booted guest its vm-test stage boots. For a "
        "CI warm-up step or a machine about to go offline; a run may start while it works "
        "(they share locks).",
    )
    p.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE")
    p.add_argument(
        "--vm-test-guests",
        action="store_true",
        help="also every guest the `vm-test` command boots (its sysvinit guest too), not only "
        "the one the run's stage boots",
    )
    p.set_defaults(handler=lazy_handler("prepare", "cmd_prepare"))


def add_bump(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "bump",
        parents=[common],
        help="move Debian pins to their newest verified versions: recipes' QEMU (source.debian, "
        "source.mirror) within its series, a Dockerfile's source pins (Dockerfile.mingw); say "
        "which locks are behind their suite's updates of the libraries the agent links",
        description="For each RECIPE pinned from Debian's archive, find the newest point "
        "release of its QEMU series on the configured Debian mirror: InRelease verified with "
        "gpgv, Sources, .dsc and orig tarball each checked against the one before, files that "
        "are missing skipped, the recipe's patches tried on the tarball. For each DOCKERFILE "
        "with Debian source pins (ARG NAME_VERSION / NAME_SHA256), the newest version of each "
        "package the suite its image is made from lists, by the same chain. For each static "
        "Linux RECIPE, its lock against the suite's signed Packages index (the libraries the "
        "agent links). Prints what it found; --write rewrites the pins in place (comments and "
        "layout kept; a Dockerfile whole or not at all) and remakes a stale lock from its "
        "build image made anew (that needs the engine). A refusal "
        "leaves its file as it is, and the exit code is the first refusal's (3, or 4 for "
        "patches); 14 when a lock is behind its suite.",
    )
    p.add_argument(
        "recipes",
        nargs="*",
        type=Path,
        metavar="RECIPE|DOCKERFILE",
        help="recipes (*.yaml, *.yml) and Dockerfiles to bump (default: every recipes/*.yaml, "
        "and each Dockerfile they build in that pins Debian sources)",
    )
    p.add_argument(
        "--write",
        action="store_true",
        help="rewrite each recipe's and Dockerfile's pins in its file",
    )
    p.add_argument(
        "--suite",
        action="append",
        type=_debian_suite,
        metavar="SUITE",
        help="a suite whose index to search for source.mirror pins; repeat it for several "
        "(default: unstable); a source.debian pin is searched in its own suite only",
    )
    p.add_argument(
        "--keyring",
        type=Path,
        default=KEYRING,
        metavar="FILE",
        help=f"the OpenPGP keyring the suites' InRelease must verify with (default: {KEYRING})",
    )
    p.add_argument(
        "--allow-expired-index",
        action="store_true",
        help="take an InRelease past its Valid-Until (a snapshot mirror's), still verified",
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON document instead of lines for people"
    )
    p.set_defaults(handler=lazy_handler("bump", "cmd_bump"))


def _debian_suite(value: str) -> str:
    """A suite name as a path part of the mirror's dists/ (never a path of its own)."""
    if not re.fullmatch(patterns.DEBIAN_SUITE, value):
        raise argparse.ArgumentTypeError(patterns.in_words(patterns.DEBIAN_SUITE, value) or value)
    return value


def add_clean(
    sub: Subcommands, common: argparse.ArgumentParser, recipes: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("clean", parents=[common], help="remove what crashed runs left behind")
    p.add_argument(
        "--keep",
        type=at_least(0),
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
    p.set_defaults(handler=lazy_handler("clean", "cmd_clean"))
