"""Stage: the patch series. Digests are checked on the host before any container starts; the
patches are applied inside the container, and a failure names the patch, the file and the hunk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from builder.config.layout import BUILD_UID
from builder.config.plan import PatchPlan
from builder.errors import InputError, PatchError
from builder.formats.checksums import verify_bytes
from builder.log import StepOutput
from builder.stages import container_commands
from builder.stages.context import RunContext


@dataclass(frozen=True)
class CheckedPatch:
    plan: PatchPlan
    data: bytes
    container_name: str  # numbered, so the series order survives in the container


def check(ctx: RunContext, output: StepOutput) -> None:
    """Stage `patches`: every patch of the series against its sha256, before any container."""
    ctx.checked_patches = check_patches(ctx.patch_plans)
    for checked in ctx.checked_patches:
        output.line(f"{checked.plan.name} sha256:{checked.plan.sha256} ok")


def apply(ctx: RunContext, output: StepOutput) -> None:
    """Stage `patch`: apply the series in the container; a failure names patch, file, hunk."""
    for checked in ctx.checked_patches:
        output.line(f"applying {checked.plan.name}")
        command = container_commands.apply_patch(ctx.layout, checked.container_name)
        code, lines = ctx.run_command(command, output)
        if code != 0:
            raise PatchError(
                f"patch {checked.plan.path} does not apply to the QEMU {ctx.qemu_version} "
                f"source: {describe_failure(lines)}",
                hint=f"full log: {output.log_path}; the patch must be made for this QEMU series",
            )
    if not ctx.checked_patches:
        output.line("no patches in the recipe")


def send(ctx: RunContext) -> None:
    """Copy the checked patch bytes (not the files again) into the container."""
    ctx.container.put_files(
        ctx.layout.patches,
        {c.container_name: c.data for c in ctx.checked_patches},
        uid=BUILD_UID,
        gid=BUILD_UID,
    )


def check_patches(patches: Sequence[PatchPlan]) -> list[CheckedPatch]:
    checked = []
    for index, patch in enumerate(patches):
        where = f"patches[{index}]"
        try:
            data = patch.path.read_bytes()  # read once: these bytes are checked and sent
        except OSError:
            raise InputError(f"{where}: {patch.path} does not exist") from None
        verify_bytes(data, patch.sha256, where, patch.path)
        checked.append(CheckedPatch(patch, data, f"{index:04d}-{patch.name}"))
    return checked


_FILE = re.compile(r"^(?:patching|checking) file (?P<file>.+)$")
_HUNK = re.compile(r"^Hunk #(?P<hunk>\d+) FAILED at (?P<line>\d+)")
_HEADER = re.compile(r"^\|?(?:---|\+\+\+) (?:a/|b/)?(?P<file>\S+)")


def describe_failure(output: Sequence[str]) -> str:
    """Turn `patch` output into "file F: hunk #N (at line L) failed" lines."""
    problems: list[str] = []
    current: str | None = None
    header_file: str | None = None
    for line in output:
        if match := _FILE.match(line):
            current = match["file"].strip("'\"")
        elif match := _HEADER.match(line):
            header_file = match["file"]
        elif match := _HUNK.match(line):
            problems.append(f"{current}: hunk #{match['hunk']} (at line {match['line']}) failed")
        elif line.startswith("No file to patch."):
            # patch prints the missing file's diff header after "can't find file to patch".
            problems.append(f"{header_file or 'a file'}: not in the source tree")
        elif "Reversed (or previously applied) patch detected" in line:
            problems.append(f"{current}: already applied (or reversed)")
        elif line.startswith("patch: **** "):
            problems.append(line.removeprefix("patch: **** "))
    return "; ".join(problems) or "patch failed (see the log)"
