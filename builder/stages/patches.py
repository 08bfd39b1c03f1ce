"""Stage: the patch series. Digests are checked on the host before any container starts; the
patches are applied inside the container, and a failure names the patch, the file and the hunk.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.boxes import container_commands
from builder.config.layout import BUILD_UID
from builder.config.plan import PatchPlan
from builder.errors import InputError, PatchError
from builder.formats.archives import FSFREEZE_HOOK
from builder.formats.checksums import verify_bytes
from builder.log import StepOutput
from builder.run_context import RunContext


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
    if ctx.plan.package is not None and ctx.source.fsfreeze_hook:
        # The packages ship QEMU's hook script as this run builds the tree: patched.
        ctx.fsfreeze_hook = patched_file(
            ctx.source.fsfreeze_hook, FSFREEZE_HOOK, [c.plan.path for c in ctx.checked_patches]
        )
        if ctx.fsfreeze_hook != ctx.source.fsfreeze_hook:
            output.line(f"{FSFREEZE_HOOK}: the packages ship it with the run's patches applied")


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


# A unified diff's `+++` line, naming the file it changes.
TOUCHED = re.compile(r"^\+\+\+ (?:b/)?(?P<path>[^\t\n]+)")


def patched_file(text: str, name: str, patches: list[Path]) -> str:
    """One file of the source (`name`, its text) with the parts of `patches` that change it
    applied in order, on a scratch copy on the host (the package stage ships QEMU's fsfreeze
    hook as the run built the tree). A part that does not apply stops the run."""
    sections = [(p, _section(p.read_text(errors="replace"), name)) for p in patches]
    sections = [(p, section) for p, section in sections if section]
    if not sections:
        return text
    with tempfile.TemporaryDirectory(prefix="qga-patched-") as scratch:
        target = Path(scratch) / name
        target.parent.mkdir(parents=True)
        target.write_text(text)
        for patch, section in sections:
            process = subprocess.run(
                ["patch", "-p1", "--forward", "--batch", "--no-backup-if-mismatch"],
                cwd=scratch,
                input=section,
                capture_output=True,
                text=True,
                check=False,
            )
            if process.returncode != 0:
                raise PatchError(
                    f"patch {patch.name} does not apply to {name}: "
                    + describe_failure((process.stdout + process.stderr).splitlines())
                )
        return target.read_text()


def _section(patch: str, name: str) -> str:
    """The part of a unified diff that changes `name` (its ---/+++ lines and hunks)."""
    lines, found, taking = patch.splitlines(keepends=True), [], False
    for at, line in enumerate(lines):
        if line.startswith("--- ") and at + 1 < len(lines) and lines[at + 1].startswith("+++ "):
            match = TOUCHED.match(lines[at + 1])
            taking = bool(match) and match["path"] == name  # type: ignore[index]
        elif line.startswith("diff "):
            taking = False
        if taking:
            found.append(line)
    return "".join(found)
