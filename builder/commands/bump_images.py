"""What `bump` can know of a recipe's build image without the engine: the plan a run would
build (the series' choices resolved from a Debian pin's QEMU release) and the Debian suite the
image is made from (its apt sees that suite only: a debootstrapped sources.list names it alone).
"""

from __future__ import annotations

from collections.abc import Callable

from builder.config.plan import Plan
from builder.host import debian
from builder.host.debian_chain import Index
from builder.host.debian_index import compare_versions
from builder.stages import series


def known_release(plan: Plan) -> str | None:
    """The QEMU release a Debian-pinned source is (from the pin, nothing fetched), else None."""
    source = plan.source
    if source.kind == "debian" and source.version:
        return debian.qemu_release(source.version)
    if source.kind == "mirror" and source.mirror_path:
        return debian.qemu_release(debian.orig_tarball_version(source.mirror_path))
    return None


def resolved_plan(plan: Plan) -> Plan | None:
    """The plan a run builds: the plan itself when the recipe leaves nothing to the series;
    else resolved with the pin's release; None when that needs the source fetched."""
    if not plan.series_decides:
        return plan
    release = known_release(plan)
    return series.resolve_plan(plan, release) if release else None


def image_suite(plan: Plan) -> str | None:
    """The Debian suite a resolved plan's build image is debootstrapped from, else None (a
    registry base: its packages come from an archive bump does not read)."""
    base = plan.image.base
    return base.suite if base.kind == "debootstrap" and base.suite else None


def build_suite(plan: Plan) -> str | None:
    """The suite of the recipe's build image: its own debootstrap base, or its series' (known
    from a Debian pin's release)."""
    if plan.image.base.kind != "series":
        return image_suite(plan)
    resolved = resolved_plan(plan)
    return image_suite(resolved) if resolved is not None else None


def beyond_the_image(
    index: Index, suite: str, taken: dict[str, str], listed: Callable[[str], dict[str, str]]
) -> list[tuple[str, str, str]]:
    """(name, version, other suite) for each version SUITE-updates or SUITE-security lists
    (where the mirror serves them) newer than `taken`: the image cannot get it, since its apt
    sources name SUITE only (a debootstrapped sources.list), so it is said and not taken."""
    return [
        (name, version, other)
        for other in index.updates_suites(suite)
        for name, version in listed(other).items()
        if name in taken and compare_versions(version, taken[name]) > 0
    ]
