"""The build image's package list, and the lock file that pins it.

`recipes/NAME.lock` lists every package of the image a recipe builds in (`qga-builder lock`
writes it). `run --locked` stops before anything is compiled when a rebuilt image's packages
differ from it, and says which, so a user learns why bits changed instead of guessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from builder.boxes import container_commands
from builder.errors import InputError, StepError
from builder.log import StepOutput
from builder.run_context import Container, RunContext

HEADER = "# qga-builder toolchain lock: package version architecture (from dpkg-query)\n"


def inventory(ctx: RunContext, output: StepOutput) -> None:
    """Stage `toolchain`: the build image's distribution and packages (recorded), checked
    against the lock."""
    listing = _listing(ctx.container)
    ctx.distribution = distribution(listing)
    ctx.package_format, ctx.packages = inventory_format(listing), parse_inventory(listing)
    output.line(f"{ctx.distribution}: {len(ctx.packages)} {ctx.package_format} packages")
    if ctx.use_ccache:
        probe: list[str] = []
        command = container_commands.ccache_probe()
        if ctx.container.run(list(command.argv), on_line=probe.append, step=command.step):
            output.line("compiler cache: this build image cannot use it (no ccache or /ccache)")
        else:
            ctx.ccache = {"version": probe[-1] if probe else "", "volume": "/ccache"}
            output.line(f"compiler cache: {ctx.ccache['version']} in its volume")
    if ctx.plan.locked:
        check_lock(ctx.plan.lock_path, ctx.packages)
        output.line(f"packages match {ctx.plan.lock_path}")


def _listing(box: Container) -> list[str]:
    listing: list[str] = []
    command = container_commands.package_inventory()
    code = box.run(list(command.argv), on_line=listing.append, step=command.step)
    if code != 0:
        raise StepError(f"listing the build image's packages failed (exit {code})")
    return listing


def distribution(listing: Iterable[str]) -> str:
    """The image's os-release PRETTY_NAME, as the inventory's first line reports it."""
    for line in listing:
        if line.startswith("distribution "):
            return line.removeprefix("distribution ").strip()[:128] or "unknown"
    return "unknown"


def read_packages(box: Container, output: StepOutput) -> tuple[str, dict[str, str]]:
    """The build image's package format (deb or rpm) and its packages."""
    listing = _listing(box)
    packages = parse_inventory(listing)
    package_format = inventory_format(listing)
    output.line(f"{len(packages)} {package_format} packages in the build image")
    return package_format, packages


class LockMismatch(InputError):
    """The build image's packages differ from the recipe's lock file."""


def parse_inventory(lines: Iterable[str]) -> dict[str, str]:
    """dpkg-query lines `name<TAB>version<TAB>arch` -> {name: "version arch"}. A name that
    comes again for another architecture (a cross build's image has libc6 for amd64 and for
    arm64) is kept as `name:arch`, so the lock and the manifest lose neither."""
    rows = sorted(
        (parts for line in lines if len(parts := line.strip().split("\t")) == 3 and parts[0]),
        key=lambda row: (row[0], row[2]),
    )  # by name, then architecture: which of a pair keeps the plain name does not vary
    packages: dict[str, str] = {}
    for name, version, arch in rows:
        packages[name if name not in packages else f"{name}:{arch}"] = f"{version} {arch}"
    return packages


def inventory_format(lines: Iterable[str]) -> str:
    """deb or rpm: the first line of the inventory command says which package manager answered."""
    for line in lines:
        if line.startswith("format "):
            return line.split()[1]
    return "deb"


def format_lock(packages: Mapping[str, str]) -> str:
    return HEADER + "".join(f"{name} {packages[name]}\n" for name in sorted(packages))


def read_lock(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(
            f"--locked: no lock file {path}",
            hint=f"write it with `qga-builder lock {path.with_suffix('.yaml')}`",
        ) from None
    packages = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise InputError(f"{path}:{number}: expected `package version architecture`")
        packages[parts[0]] = f"{parts[1]} {parts[2]}"
    return packages


def differences(locked: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    lines = []
    for name in sorted(set(locked) | set(actual)):
        if name not in actual:
            lines.append(f"- {name} {locked[name]} (in the lock, not in the image)")
        elif name not in locked:
            lines.append(f"+ {name} {actual[name]} (in the image, not in the lock)")
        elif locked[name] != actual[name]:
            lines.append(f"~ {name}: lock {locked[name]}, image {actual[name]}")
    return lines


def check_lock(path: Path, actual: Mapping[str, str]) -> None:
    changed = differences(read_lock(path), actual)
    if changed:
        shown = "\n".join(f"    {line}" for line in changed[:50])
        more = f"\n    ... and {len(changed) - 50} more" if len(changed) > 50 else ""
        raise LockMismatch(
            f"--locked: the build image's packages differ from {path} "
            f"({len(changed)} differences):\n{shown}{more}",
            hint="if the change is intended, rewrite the lock with `qga-builder lock`",
        )
