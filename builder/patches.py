"""Stage: the patch series. Digests are checked on the host before any container starts; the
patches are applied inside the container, and a failure names the patch, the file and the hunk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from builder.errors import InputError
from builder.plan import PatchPlan
from builder.sources import verify_digest


@dataclass(frozen=True)
class CheckedPatch:
    plan: PatchPlan
    data: bytes
    container_name: str  # numbered, so the series order survives in the container


def check_patches(patches: Sequence[PatchPlan]) -> list[CheckedPatch]:
    checked = []
    for index, patch in enumerate(patches):
        where = f"patches[{index}]"
        if not patch.path.is_file():
            raise InputError(f"{where}: {patch.path} does not exist")
        verify_digest(patch.path, patch.sha256, where)
        data = patch.path.read_bytes()
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
