"""Stage `link-map`, and the SBOM `publish` writes from what it found (`formats.sbom`).

In the build container, after the checks: the agent's own link command is run again with a
link map (GNU ld's `-Map`), which lists each archive member the link took and each object it
loaded; the relinked file, stripped as the artifact is, must have the artifact's sha256 (the
same bytes: the same link). Then dpkg says which Debian package owns each file that is not
QEMU's own, and (Windows) where each DLL the MSI bundles comes from: a Debian package, the build
itself, or a library cross-built in the build image from a source pinned in its Dockerfile.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder import __version__
from builder.boxes.container_commands import LINK_MAP, SBOM_DIR, file_owners, relink_with_map
from builder.config.dockerfile_pins import SourcePin, read_pins
from builder.errors import ArtifactError
from builder.formats import archives, sbom
from builder.formats.checksums import sha256_bytes
from builder.formats.link_map import MAX_MAP_BYTES, LinkMapError, parse_link_map
from builder.log import StepOutput
from builder.run_context import RunContext

AGENT_KINDS = ("static-elf", "pe")
# Files of a library cross-built in the build image, by name, to the Dockerfile pin it was
# built from (the ARGs' prefix: GLIB for GLIB_VERSION / GLIB_SHA256).
PINNED_BY_NAME = (
    (re.compile(r"^(lib)?(glib|gio|gobject|gmodule|gthread)-2\.0"), "GLIB"),
    (re.compile(r"^gspawn-"), "GLIB"),
    (re.compile(r"^(lib)?iconv"), "GLIB"),  # glib's own win_iconv.c, built as iconv.dll
    (re.compile(r"^(lib)?pcre2"), "PCRE2"),
    (re.compile(r"^(lib)?ffi"), "LIBFFI"),
    (re.compile(r"^(lib)?(intl|asprintf)"), "GETTEXT"),
    (re.compile(r"^(lib)?winpthread"), "MINGW_W64"),
)


@dataclass(frozen=True)
class Owner:
    package: str
    version: str
    architecture: str
    source: str
    source_version: str


@dataclass
class LinkInventory:
    """What `link-map` found; `publish` turns it into the SBOM."""

    agent: str  # the artifact's name
    same_link: bool
    static: dict[str, Owner | None] = field(default_factory=dict)  # file -> its owner
    bundled: dict[str, tuple[str, Owner | None]] = field(default_factory=dict)  # DLL -> where
    built_dlls: list[str] = field(default_factory=list)


def link_map(ctx: RunContext, output: StepOutput) -> None:
    """Stage `link-map`."""
    agents = [a for a in ctx.artifact_plans if a.kind in AGENT_KINDS]
    if not agents:
        output.line("no agent among the artifacts: nothing linked to describe")
        return
    agent = agents[0]
    lines = ctx.run_step(relink_with_map(ctx.layout, agent.path, ctx.plan.strip_tool), output)
    digests = {parts[1]: parts[0] for line in lines if len(parts := line.split()) == 2}
    scratch = f"{SBOM_DIR}/{agent.path.rsplit('/', 1)[-1]}"
    relinked = digests.get(f"{scratch}.stripped" if agent.strip else scratch)
    built = {a.name: a.sha256 for a in ctx.artifacts}
    same = relinked is not None and relinked == built.get(agent.name)
    output.line(
        f"relinked with a map: {'the same bytes as' if same else 'NOT the same bytes as'} "
        f"{agent.name}"
    )
    inputs = _read_map(ctx)
    static, objects = inputs.outside(ctx.layout.root)
    dlls = sorted(
        name
        for contents in ctx.msi_contents.values()
        for name in contents.get("files", {})
        if name.lower().endswith((".dll", ".exe")) and name != agent.name
    )
    command = file_owners([*sorted(static), *objects], dlls, ctx.layout.build)
    inventory = LinkInventory(agent.name, same)
    _read_owners(ctx.run_step(command, output), inventory)
    ctx.link_inventory = inventory
    output.line(
        f"{len(inventory.static)} library files linked into {agent.name}"
        + (f"; {len(inventory.bundled)} files bundled beside it" if inventory.bundled else "")
    )


def _read_map(ctx: RunContext) -> Any:
    landing = ctx.staging / ".link-map"
    try:
        archives.safe_extract(
            ctx.container.get_archive(LINK_MAP),
            landing,
            what="the agent's link map",
            limits=archives.Limits(max_bytes=MAX_MAP_BYTES, max_members=1),
        )
        text = (landing / Path(LINK_MAP).name).read_text(errors="replace")
        return parse_link_map(text)
    except LinkMapError as exc:
        raise ArtifactError(f"the agent's link map: {exc}") from None
    finally:
        shutil.rmtree(landing, ignore_errors=True)


def _read_owners(lines: list[str], inventory: LinkInventory) -> None:
    """Join the owners step's lines (see `container_commands.file_owners`)."""
    files: list[tuple[str, str]] = []  # (as the map names it, real path)
    dlls: list[tuple[str, str]] = []  # (name, real path)
    owned: dict[str, str] = {}  # real path -> its (first) package
    versions: dict[str, Owner] = {}
    for line in lines:
        match line.split("\t"):
            case ["FILE", path, real]:
                files.append((path, real))
            case ["DLL", name, real]:
                dlls.append((name, real))
            case ["BUILT", name, _]:
                inventory.built_dlls.append(name)
            case ["MISSING", name]:
                raise ArtifactError(
                    f"{name}, which the MSI bundles, is neither built by QEMU nor found by the "
                    "cross toolchain or in the mingw sysroot: the SBOM cannot say what it is"
                )
            case ["S", said]:
                packages, _, path = said.partition(": ")
                owned.setdefault(path, packages.split(", ")[0])
            case ["Q", package, version, arch, source, source_version, as_named]:
                versions[as_named] = Owner(
                    package, version, arch, source or package, source_version or version
                )
    for path, real in files:
        package = owned.get(real) or owned.get(path)
        inventory.static[path] = versions.get(package) if package else None
    for name, real in dlls:
        package = owned.get(real)
        inventory.bundled[name] = (real, versions.get(package) if package else None)


def write(ctx: RunContext) -> str | None:
    """sbom.spdx.json into the staging directory (None when nothing linked was found, e.g. a
    recipe without an agent); returns its sha256."""
    inventory: LinkInventory | None = ctx.link_inventory
    if inventory is None:
        return None
    inputs = sbom.SbomInputs(
        recipe=ctx.plan.recipe_name,
        version=ctx.plan.release_version(ctx.qemu_version),
        tool_version=__version__,
        source_date_epoch=ctx.source_date_epoch,
        distro=distro(ctx.distribution),
        source=ctx.source.record,
        patches=[{"name": c.plan.name, "sha256": c.plan.sha256} for c in ctx.checked_patches],
        how_found=f"The libraries are the ones {inventory.agent}'s link took, from GNU ld's link "
        "map of its own link command run again"
        + (
            " (the relinked file is the artifact, byte for byte"
            + (", before its Authenticode signature)" if ctx.authenticode else ")")
            if inventory.same_link
            else " (the relinked file differs from the artifact: the map may not be the link's)"
        )
        + "; each file's owner from dpkg in the build image, or the orig tarball its "
        "Dockerfile pins for what was cross-built there.",
    )
    by_name = {a.name: a for a in ctx.artifacts}
    inputs.built.append(sbom.Built(inventory.agent, by_name[inventory.agent].sha256))
    for artifact in ctx.artifacts:
        if artifact.kind in ("deb", "rpm", "tarball", "msi"):
            inputs.built.append(sbom.Built(artifact.name, artifact.sha256, "INSTALL"))
    bundled = {n: d for c in ctx.msi_contents.values() for n, d in c.get("files", {}).items()}
    for name in sorted(set(inventory.built_dlls)):  # QEMU's own (the VSS provider)
        inputs.built.append(sbom.Built(name, bundled[name], "LIBRARY"))
    _libraries(ctx, inputs, inventory)
    data = sbom.encode(sbom.document(inputs))
    (ctx.staging / sbom.SBOM_NAME).write_bytes(data)
    return sha256_bytes(data)


def _pins(ctx: RunContext) -> dict[str, SourcePin]:
    """The build image's Dockerfile's source pins (read only when a file needs them)."""
    dockerfile = ctx.image_plan.dockerfile
    return {pin.name: pin for pin in read_pins(dockerfile.read_text(), str(dockerfile))}


def _libraries(ctx: RunContext, inputs: sbom.SbomInputs, inventory: LinkInventory) -> None:
    pins: dict[str, SourcePin] | None = None
    debian: dict[tuple[str, str, str], list[str]] = {}
    owners: dict[str, Owner] = {}
    cross: dict[tuple[str, str, str], list[str]] = {}
    unknown: list[str] = []
    msi = next((a.name for a in ctx.artifacts if a.kind == "msi"), None)
    entries = [(p, o, inventory.agent, _how(p)) for p, o in inventory.static.items()]
    entries += [
        (n, o, msi or inventory.agent, "CONTAINS") for n, (_, o) in inventory.bundled.items()
    ]
    for path, owner, into, how in entries:
        name = Path(path).name
        if owner is not None:
            _check_version(ctx, owner, path)
            owners[owner.package] = owner
            debian.setdefault((owner.package, into, how), []).append(name)
        elif pin := _pin_of(name, pins := pins if pins is not None else _pins(ctx)):
            cross.setdefault((pin.name, into, how), []).append(name)
        else:
            unknown.append(path)
    if unknown:
        raise ArtifactError(
            f"the SBOM cannot say where {', '.join(sorted(unknown)[:5])} come(s) from: no Debian "
            "package of the build image owns it, and no source its Dockerfile pins made it",
            hint="name the library's pin in builder/stages/sbom.py (PINNED_BY_NAME)",
        )
    for (package, into, how), files in debian.items():
        owner = owners[package]
        inputs.debian.append(
            sbom.DebianLibrary(
                owner.source,
                owner.source_version,
                owner.package,
                owner.version,
                owner.architecture,
                tuple(sorted(files)),
                into,
                how,
            )
        )
    for (pin_name, into, how), files in cross.items():
        assert pins is not None  # read when the first of these was found
        pin = pins[pin_name]
        inputs.cross.append(
            sbom.CrossBuilt(
                pin.package,
                pin.version,
                pin.orig_name(),
                pin.sha256,
                tuple(sorted(files)),
                into,
                "DYNAMIC_LINK" if how == "STATIC_LINK" else how,
            )
        )


def _how(path: str) -> str:
    return "DYNAMIC_LINK" if path.endswith(".dll.a") else "STATIC_LINK"


def _pin_of(name: str, pins: dict[str, SourcePin]) -> SourcePin | None:
    for pattern, pin_name in PINNED_BY_NAME:
        if pattern.match(name) and pin_name in pins:
            return pins[pin_name]
    return None


def _check_version(ctx: RunContext, owner: Owner, path: str) -> None:
    """The SBOM's versions are the manifest's: the image's package list says the same."""
    known = ctx.packages.get(owner.package) or ctx.packages.get(
        f"{owner.package}:{owner.architecture}"
    )
    listed = (known or "").split(" ")[0]
    if ctx.packages and listed != owner.version:
        raise ArtifactError(
            f"{path}: dpkg says {owner.package} {owner.version}, the image's package list "
            f"{listed or 'nothing'}: the SBOM and the manifest would disagree"
        )


def distro(distribution: str) -> str:
    """`debian-13` from the build image's PRETTY_NAME (`Debian GNU/Linux 13 (trixie)`)."""
    match = re.search(r"Debian GNU/Linux (\d+)", distribution)
    if match:
        return f"debian-{match[1]}"
    for suite, name in sbom.DISTRO_OF_SUITE.items():
        if suite in distribution:
            return name
    return "debian"
