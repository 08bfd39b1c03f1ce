"""`bump` for the libraries the static Linux agent links. Its build image installs them
unversioned from the suite when the image is made, and the image is kept while its inputs
(Dockerfile, build args, base) are unchanged, so a Debian update of one of them never reaches a
build by itself. For each static Linux recipe, the versions the suite's signed Packages index
lists now are compared with what the recipe's lock records. bump writes no lock: making one
needs the engine and a new image (`lock` alone would read the cached image again), so a stale
lock is reported with the commands that remake the image and the lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from builder.commands.bump_images import beyond_the_image, image_suite, resolved_plan
from builder.commands.common import load_plan
from builder.commands.lock import refuse_foreign, toolchain_packages
from builder.config.overrides import Overrides
from builder.config.plan import Plan
from builder.engine import Engine
from builder.errors import BuilderError, ImageError, InputError
from builder.host.cache import Cache
from builder.host.debian_chain import Index
from builder.host.debian_index import NoSuite, compare_versions
from builder.host.files import replace_file
from builder.log import LineSink
from builder.stages import toolchain

# The -dev packages whose static archives are on qemu-ga's link line (qga links QEMU's util
# library and GLib; --without-default-features leaves GIO out, and with it libffi, libmount,
# libselinux and zlib's use): libc.a, libglib-2.0.a and what glib-2.0.pc's Requires.private
# adds. zlib is in because QEMU's configure requires it and a later series may link it.
LINKED = (
    "libc6-dev",
    "libglib2.0-dev",
    "libpcre2-dev",
    "libsysprof-capture-4-dev",
    "zlib1g-dev",
)


@dataclass
class LockOutcome:
    recipe: Path
    status: Literal["current", "stale", "remade", "not-locked", "skipped", "refused"]
    text: str
    suite: str | None = None
    lock: Path | None = None
    suite_versions: dict[str, str] = field(default_factory=dict)
    updates: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    command: str | None = None
    error: BuilderError | None = None


def check_locks(recipes: Iterable[Path], index: Index) -> list[LockOutcome]:
    outcomes = [check_lock(path, index) for path in recipes]
    return [outcome for outcome in outcomes if outcome is not None]


def check_lock(path: Path, index: Index) -> LockOutcome | None:
    """None for a recipe this does not concern (not a static Linux agent, or one that does not
    load: its own line says why)."""
    try:
        plan, _ = load_plan(path, Overrides())
        resolved = resolved_plan(plan) if plan.target == "linux" else None
    except BuilderError:
        return None
    if plan.target != "linux":
        return None
    if resolved is None:
        return LockOutcome(
            path,
            "skipped",
            f"{path}: linked libraries not checked: the build image comes from the source's "
            "QEMU series, and the source is not pinned from Debian (its release is unknown "
            "until it is fetched)",
        )
    if "--static" not in resolved.configure_flags:
        return None  # a dynamic agent uses the guest's own libraries
    suite = image_suite(resolved)
    if suite is None:
        return LockOutcome(
            path,
            "skipped",
            f"{path}: linked libraries not checked: its base {resolved.image.base.reference} is "
            "no debootstrapped Debian suite (its packages come from an archive bump does not read)",
        )
    try:
        return _compare(path, resolved, suite, index)
    except NoSuite as exc:  # not a broken chain: a mirror without that suite makes no image
        text = f"{path}: linked libraries not checked: {exc.message}"
        return LockOutcome(path, "skipped", text, suite)
    except BuilderError as exc:
        text = f"{path}: linked libraries: refused: {exc.message}"
        return LockOutcome(path, "refused", text, suite, error=exc)
    except (OSError, UnicodeDecodeError) as exc:  # the lock file is there but cannot be read
        error = InputError(f"cannot read {resolved.lock_path}: {exc}")
        text = f"{path}: linked libraries: refused: {error.message}"
        return LockOutcome(path, "refused", text, suite, error=error)


def _compare(path: Path, plan: Plan, suite: str, index: Index) -> LockOutcome:
    machine = plan.arch.debian  # the agent's machine: an arm64 agent links arm64 libraries
    current = index.binaries(suite, machine, LINKED)
    outcome = LockOutcome(path, "current", "", suite, suite_versions=current)
    outcome.notes = _elsewhere(path, suite, current, index, machine)
    said = ", ".join(f"{name} {current[name]}" for name in LINKED if name in current) or (
        f"{suite} lists none of them"
    )
    if not plan.lock_path.is_file():
        outcome.status = "not-locked"
        outcome.text = (
            f"{path}: not locked: its build image takes {suite}'s current versions of the "
            f"libraries the agent links when the image is next made ({said}); whether the "
            f"cached image is older cannot be known without the engine (`qga-builder lock "
            f"{path}` records its packages, which bump then compares)"
        )
        return outcome
    outcome.lock = plan.lock_path
    locked = _locked_versions(toolchain.read_lock(plan.lock_path), machine)
    for name in LINKED:
        if name not in locked or name not in current:
            continue
        order = compare_versions(current[name], locked[name])
        if order > 0:
            outcome.updates.append(
                {"package": name, "locked": locked[name], "suite": current[name]}
            )
        elif order < 0:
            outcome.notes.append(
                f"{path}: {plan.lock_path.name} has {name} {locked[name]}, newer than "
                f"{suite}'s {current[name]} (a lock made from another mirror?)"
            )
    if not outcome.updates:
        outcome.text = (
            f"{path}: {plan.lock_path.name} has {suite}'s versions of the libraries the agent "
            f"links ({said})"
        )
        return outcome
    outcome.status = "stale"
    outcome.command = (
        f"qga-builder clean --keep 0 --repository {plan.image.repository} && "
        f"qga-builder lock {path}"
    )
    moved = ", ".join(f"{u['package']} {u['locked']} -> {u['suite']}" for u in outcome.updates)
    outcome.text = (
        f"{path}: update of a library the agent links, in {suite}: {moved}; "
        f"{plan.lock_path.name} (and the cached build image it was made from) have the older: "
        f"bump remakes no image; run `{outcome.command}`"
    )
    return outcome


def _locked_versions(lock: dict[str, str], machine: str) -> dict[str, str]:
    """Package -> version of the lock's packages for the agent's machine. A cross build's lock
    has some packages twice (`libc6-dev` for the build machine, `libc6-dev:arm64`): each
    entry's architecture says which one the agent links."""
    versions = {}
    for name, value in lock.items():
        version, arch = value.split()
        if arch in (machine, "all"):
            versions[name.split(":")[0]] = version
    return versions


def _elsewhere(
    path: Path, suite: str, current: dict[str, str], index: Index, machine: str
) -> list[str]:
    def listed(other: str) -> dict[str, str]:
        return index.binaries(other, machine, LINKED)

    try:
        beyond = beyond_the_image(index, suite, current, listed)
    except BuilderError as exc:  # a note's check (an expired -updates index) refuses nothing
        return [f"{path}: {suite}-updates/-security not checked: {exc.message}"]
    return [
        f"{path}: {name} {version} is in {other}, which the build image cannot get (its apt "
        f"sources name {suite} only)"
        for name, version, other in beyond
    ]


def remake_stale(outcomes: list[LockOutcome], cache: Cache, sink: LineSink) -> None:
    """`--write`: each stale lock's build image made anew (no cached layer, so apt takes the
    suite's packages as they are now), then its lock written from that image. Needs the engine;
    an engine that cannot be reached, or an image that still has an older library, is that
    lock's refusal (it is left as it was)."""
    stale = [outcome for outcome in outcomes if outcome.status == "stale"]
    if not stale:
        return
    try:
        engine = Engine()
    except BuilderError as exc:
        for outcome in stale:
            _refused(outcome, exc)
        return
    made: set[str] = set()  # images made anew in this run: recipes sharing one make it once
    with engine:
        for outcome in stale:
            try:
                _remake(outcome, engine, cache, sink, made)
            except BuilderError as exc:
                _refused(outcome, exc)


def _remake(
    outcome: LockOutcome, engine: Engine, cache: Cache, sink: LineSink, made: set[str]
) -> None:
    plan, _ = load_plan(outcome.recipe, Overrides())
    resolved = resolved_plan(plan) or plan
    refuse_foreign(resolved)
    image = repr(resolved.image)
    sink(f"{outcome.recipe}: making its build image anew for {resolved.lock_path.name}")
    packages = toolchain_packages(resolved, engine, cache, fresh=image not in made)
    made.add(image)
    for update in outcome.updates:
        have = packages.get(update["package"], "").split()
        if not have or compare_versions(have[0], update["suite"]) < 0:
            raise ImageError(
                f"{outcome.recipe}: the build image made anew has {update['package']} "
                f"{have[0] if have else '(none)'}, not {outcome.suite}'s {update['suite']}",
                hint="the image's apt reads the mirror the base was made from: is it behind "
                "the one bump read?",
            )
    replace_file(resolved.lock_path, toolchain.format_lock(packages).encode())
    outcome.status = "remade"
    moved = ", ".join(f"{u['package']} {u['locked']} -> {u['suite']}" for u in outcome.updates)
    outcome.text = (
        f"{outcome.recipe}: {resolved.lock_path.name} written from its build image made anew "
        f"({moved}); the next run builds in that image"
    )


def _refused(outcome: LockOutcome, exc: BuilderError) -> None:
    outcome.status, outcome.error = "refused", exc
    outcome.text += f"; remaking it failed: {exc.message}"


def document(outcome: LockOutcome) -> dict[str, Any]:
    return {
        "recipe": str(outcome.recipe),
        "status": outcome.status,
        "suite": outcome.suite,
        "lock": str(outcome.lock) if outcome.lock else None,
        "suite_versions": outcome.suite_versions,
        "updates": outcome.updates,
        "notes": outcome.notes,
        "command": outcome.command,
        "message": outcome.text,
    }
