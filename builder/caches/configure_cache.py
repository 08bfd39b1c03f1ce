"""Configured build trees, kept so that a patch edit does not pay for configure again.

QEMU's configure (its Python venv, then meson's few hundred compiler checks) costs 10-15 s. What
it writes depends on the build image, the configure command line, the environment, the source
and its build-system files, never on the contents of C sources. So after a fresh configure the
build directory is archived into the build-cache volume (beside ccache's objects) under a key over
exactly those inputs, and a later run with the same key extracts it instead of configuring.

Only plain runs use it (one fixed build root, see `Variation.for_run`); `verify`'s builds and
`--no-ccache` always configure. The host keeps the sha256 of every archive it stored; an archive
is copied to the container's own /tmp, checked against those digests there, and only then
extracted, so a file the tool did not store (or one changed since) is never used: it is deleted
and configure runs, with the reason in the log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.boxes import container_commands
from builder.boxes.container_commands import CCACHE_DIR, Command
from builder.config.layout import PLAIN_ROOT, WORK
from builder.log import StepOutput
from builder.run_context import RunContext

ARCHIVES = f"{CCACHE_DIR}/configured"  # in the build image's cache volume
KEEP = 8  # archives per volume (about 15 MB each); the least recently used go first
RECORDS_KEPT = 4  # digests remembered per key (one per engine that stored it, say)
FORMAT = "1"  # bump when what is archived, or how, changes

# C sources and headers configure never reads. Its checks do read some: the kernel headers QEMU
# carries (linux-headers/, by -isystem) and test programs under scripts/ (`cc.links(files(
# 'scripts/xen-detect.c'))` in 7.2 to 10.2), so those count as build-system files.
_C_FILE = re.compile(r"^(?!linux-headers/|scripts/).*\.[ch]$")
_PATCHED_PATH = re.compile(rb"^\+\+\+ (?:b/)?([^\t\n\r]+)")


@dataclass(frozen=True)
class DiffSection:
    path: str | None  # the patched file, when the section names one
    text: bytes


def diff_sections(patch: bytes) -> list[DiffSection]:
    """A patch split per file: at each `diff ` line, and at a `--- ` / `+++ ` pair that starts
    a new file in a plain (non-git) diff. The text before the first one is the preamble."""
    lines = patch.splitlines(keepends=True)
    chunks: list[list[bytes]] = [[]]
    for index, line in enumerate(lines):
        next_is_new_file = index + 1 < len(lines) and lines[index + 1].startswith(b"+++ ")
        current = chunks[-1]
        in_file = any(x.startswith(b"+++ ") for x in current)
        if line.startswith(b"diff ") or (line.startswith(b"--- ") and next_is_new_file and in_file):
            chunks.append([])
        chunks[-1].append(line)
    sections = []
    for chunk in chunks:
        path = next(
            (m[1].decode("utf-8", "replace") for x in chunk if (m := _PATCHED_PATH.match(x))), None
        )
        sections.append(DiffSection(path, b"".join(chunk)))
    return sections


def build_system_digest(patches: Sequence[bytes]) -> str:
    """What of the patches configure can see: the full text of every section that changes
    something other than a C source configure never reads. A change to such a source, a new one
    included, leaves it alone (a new file takes a meson.build change to be built, which counts).
    Prose before a diff is left out; a section whose file cannot be told (an unusual diff
    format) counts whole."""
    digest = hashlib.sha256()
    for patch in patches:
        for section in diff_sections(patch):
            if section.path is not None:
                if not _C_FILE.match(section.path):
                    digest.update(section.path.encode() + b"\0" + section.text)
            elif (
                section.text.startswith(b"diff ")
                or b"\n@@" in section.text
                or b"***" in section.text
            ):
                digest.update(section.text)
    return digest.hexdigest()


def configure_key(
    *,
    image_id: str,
    argv: Sequence[str],
    environment: dict[str, str],
    umask: str,
    source_sha256: str,
    strip_components: int,
    patches: Sequence[bytes],
) -> str:
    inputs = {
        "format": FORMAT,
        "image": image_id,
        "argv": list(argv),
        "environment": environment,
        "umask": umask,
        "source": source_sha256,
        "strip_components": strip_components,
        "build_system": build_system_digest(patches),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def applies(ctx: RunContext) -> bool:
    """The cache volume is mounted and writable (ctx.ccache), and the run builds at the fixed
    root every plain run shares."""
    return ctx.ccache is not None and ctx.layout.root == f"{WORK}/{PLAIN_ROOT}"


def key_for(ctx: RunContext) -> str:
    return configure_key(
        image_id=ctx.build_image.image_id,
        argv=container_commands.configure(ctx.layout, ctx.configure_flags).argv,
        environment=ctx.step_environment(),
        umask=ctx.variation.umask,
        source_sha256=ctx.source.sha256,
        strip_components=ctx.source.strip_components,
        patches=[checked.data for checked in ctx.checked_patches],
    )


def restore(ctx: RunContext, key: str, output: StepOutput) -> dict[str, Any]:
    """Extract the configured tree stored under `key`, if the host stored it. The record for
    the manifest says whether it did, and why not."""
    known = _known_digests(ctx, key)
    if not known:
        return _record(key, False, "no configured tree stored for these inputs")
    archive = f"{ARCHIVES}/{key}.tar"
    copy = f"{ctx.layout.root}/configured.tar"
    code, lines = ctx.run_command(_copy_and_hash(archive, copy), output)
    digest = _printed_digest(code, lines)
    if code != 0:
        return _record(key, False, "not in this engine's cache volume")
    if digest not in known:
        ctx.run_command(_remove(archive, copy), output)
        output.line(f"configured tree {key[:16]}: sha256 {digest[:16]} was not stored by this tool")
        return _record(key, False, "the stored archive changed; deleted it")
    ctx.run_step(_extract(copy, ctx.layout.build), output)
    output.line(f"configure: reused the configured tree {key[:16]} (sha256 {digest[:16]})")
    return _record(key, True, "")


def store(ctx: RunContext, key: str, output: StepOutput) -> None:
    """Archive the freshly configured build directory under `key`; failing to is not an error
    of the build (the next run configures again)."""
    code, lines = ctx.run_command(_archive(ctx.layout.build, key), output)
    digest = _printed_digest(code, lines)
    if code != 0 or len(digest) != 64:
        output.line(f"configured tree not stored (exit {code})")
        return
    path = _record_path(ctx, key)
    digests = [digest, *[d for d in _known_digests(ctx, key) if d != digest]][:RECORDS_KEPT]
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps({"sha256": digests}))
    partial.replace(path)  # readers see the old record or the new one, never half of one
    output.line(f"configured tree {key[:16]} stored (sha256 {digest[:16]})")


def _printed_digest(code: int, lines: list[str]) -> str:
    """The digest `sha256sum` printed last, or "" when the command failed."""
    return lines[-1].split()[0] if code == 0 and lines and lines[-1].split() else ""


def _record_path(ctx: RunContext, key: str) -> Path:
    return ctx.cache.dir("configured") / f"{key}.json"


def _known_digests(ctx: RunContext, key: str) -> list[str]:
    try:
        digests = json.loads(_record_path(ctx, key).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [d for d in digests if isinstance(d, str) and re.fullmatch(r"[0-9a-f]{64}", d)]


def _record(key: str, reused: bool, reason: str) -> dict[str, Any]:
    return {"key": key, "reused": reused, **({"reason": reason} if reason else {})}


def _copy_and_hash(archive: str, copy: str) -> Command:
    # Checked and extracted from a private copy: the volume's file may change in between.
    return _sh(
        "configured-restore",
        f"test -f {archive} && cp {archive} {copy} && touch {archive} && sha256sum {copy}",
    )


def _remove(archive: str, copy: str) -> Command:
    return _sh("configured-remove", f"rm -f {archive} {copy}")


def _extract(copy: str, build: str) -> Command:
    return _sh("configured-extract", f"tar -xf {copy} -C {build} && rm -f {copy}")


def _archive(build: str, key: str) -> Command:
    # A partial file of its own (two builds may store one key at once), renamed into place.
    return _sh(
        "configured-store",
        f"mkdir -p {ARCHIVES} && partial=$(mktemp {ARCHIVES}/.{key}.XXXXXX)"
        f' && tar --sort=name -C {build} -cf "$partial" .'
        f' && mv -f "$partial" {ARCHIVES}/{key}.tar'
        f" && (ls -1t {ARCHIVES}/*.tar | tail -n +{KEEP + 1} | xargs -r rm -f)"
        f" && find {ARCHIVES} -maxdepth 1 -name '.*' -type f -mmin +60 -delete"  # killed runs
        f" && sha256sum {ARCHIVES}/{key}.tar",
    )


def _sh(step: str, script: str) -> Command:
    return Command(step, ("sh", "-eu", "-c", script), "/")
