"""`bump` for vm-test's booted guests. A guest's kernel, systemd and udev are installed
unversioned from trixie when its image is made, and its disk is cached under that image's id, so
a Debian update (a new kernel in a point release) never reaches the guest by itself. The newest
cached guest of each kind records its packages (packages.txt, also in the manifest); they are
compared with what the suite's signed Packages index lists now. bump remakes no guest: that
needs the engine and minutes of emulation; a stale one is reported with the command that does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from builder.boxes.tool_box import TRIXIE
from builder.caches.guest_image import BOXES, read_packages
from builder.errors import BuilderError
from builder.formats.architecture import DEBIAN_ARCHITECTURE
from builder.host.cache import Cache
from builder.host.debian_chain import Index
from builder.host.debian_index import NoSuite, compare_versions

# What the booted-guest checks rest on: the kernel (linux-image-amd64 names the current one),
# init, udev (it starts the agent when the port appears) and the C library.
WATCHED = {
    "systemd": ("linux-image-amd64", "systemd", "udev", "libc6"),
    "sysvinit": ("linux-image-amd64", "sysvinit-core", "udev", "libc6"),
}


@dataclass
class GuestOutcome:
    init: str
    status: Literal["current", "stale", "not-made", "skipped", "refused"]
    text: str
    entry: Path | None = None
    updates: list[dict[str, str]] = field(default_factory=list)
    command: str | None = None
    error: BuilderError | None = None


def newest_guest(cache_root: Path, init: str) -> Path | None:
    """The newest complete cached guest disk of a kind (what vm-test made last)."""
    entries = [
        path
        for path in cache_root.glob(f"{init}-*")
        if (path / ".complete").is_file() and (path / "packages.txt").is_file()
    ]
    return max(entries, key=lambda p: (p / ".complete").stat().st_mtime, default=None)


def check_guests(cache: Cache, index: Index) -> list[GuestOutcome]:
    return [check_guest(cache.dir("vm/guests"), init, index) for init in BOXES]


def check_guest(cache_root: Path, init: str, index: Index) -> GuestOutcome:
    suite = TRIXIE.suite or "trixie"
    entry = newest_guest(cache_root, init)
    if entry is None:
        return GuestOutcome(
            init,
            "not-made",
            f"vm-test {init} guest: none made yet here (vm-test makes it from {suite}'s "
            "current packages)",
        )
    try:
        current = index.binaries(suite, DEBIAN_ARCHITECTURE, WATCHED[init])
    except NoSuite as exc:
        return GuestOutcome(init, "skipped", f"vm-test {init} guest: not checked: {exc.message}")
    except BuilderError as exc:
        return GuestOutcome(
            init, "refused", f"vm-test {init} guest: refused: {exc.message}", entry, error=exc
        )
    made = read_packages(entry / "packages.txt")
    outcome = GuestOutcome(init, "current", "", entry)
    for name in WATCHED[init]:
        if name in made and name in current and compare_versions(current[name], made[name]) > 0:
            outcome.updates.append({"package": name, "guest": made[name], "suite": current[name]})
    if not outcome.updates:
        said = ", ".join(f"{name} {made[name]}" for name in WATCHED[init] if name in made)
        outcome.text = f"vm-test {init} guest ({entry.name}): {suite}'s current versions ({said})"
        return outcome
    outcome.status = "stale"
    outcome.command = f"qga-builder clean --keep 0 --repository qga-builder/{BOXES[init].name}"
    moved = ", ".join(f"{u['package']} {u['guest']} -> {u['suite']}" for u in outcome.updates)
    outcome.text = (
        f"vm-test {init} guest ({entry.name}): update in {suite}: {moved}; the cached guest has "
        f"the older: bump remakes no guest; run `{outcome.command}` (the next vm-test makes "
        "the image and its disk anew)"
    )
    return outcome


def document(outcome: GuestOutcome) -> dict[str, Any]:
    return {
        "init": outcome.init,
        "status": outcome.status,
        "entry": str(outcome.entry) if outcome.entry else None,
        "updates": outcome.updates,
        "command": outcome.command,
        "message": outcome.text,
    }
