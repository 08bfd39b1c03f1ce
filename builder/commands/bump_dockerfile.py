"""`bump` for a Dockerfile's Debian source pins (Dockerfile.mingw: the sources GLib and what it
needs are cross-built from). Each pin moves to the newest version of its source package that the
suite the image is made from lists, whose .dsc verifies against that suite's signed index, and
whose orig tarball is the one the .dsc names. The Dockerfile is rewritten as a whole or not at
all: one pin refused leaves every pin as it was.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from builder.commands.bump_images import beyond_the_image, build_suite
from builder.commands.common import load_plan
from builder.config.dockerfile_pins import SourcePin, read_pins, rewrite_dockerfile
from builder.config.overrides import Overrides
from builder.errors import BuilderError, InputError
from builder.host import debian_chain, debian_index
from builder.host.cache import Cache
from builder.host.debian_chain import Index
from builder.host.debian_index import SourceEntry, compare_versions
from builder.log import LineSink


@dataclass
class PinOutcome:
    pin: SourcePin
    status: Literal["bumped", "current", "refused"]
    text: str
    version: str | None = None  # the new Debian version
    orig: str | None = None  # the new version's orig tarball
    sha256: str | None = None
    error: BuilderError | None = None

    @property
    def orig_changed(self) -> bool:
        return self.sha256 is not None and self.sha256 != self.pin.sha256


@dataclass
class DockerfileOutcome:
    path: Path
    status: Literal["bumped", "current", "refused", "no-pins"]
    text: str
    suite: str | None = None
    pins: list[PinOutcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    written: bool = False
    error: BuilderError | None = None


def pinned_dockerfiles(recipes: Iterable[Path]) -> list[Path]:
    """The Dockerfiles the recipes build in that pin Debian sources (in the order first named)."""
    found: dict[Path, Path] = {}
    for recipe in recipes:
        try:
            plan, _ = load_plan(recipe, Overrides())
        except BuilderError:
            continue  # the recipe's own outcome says what is wrong with it
        dockerfile = plan.image.dockerfile
        if dockerfile.resolve() in found:
            continue
        try:
            pinned = bool(read_pins(dockerfile.read_text(), ""))
        except (BuilderError, OSError, UnicodeDecodeError):
            pinned = True  # taken, so that bump_dockerfile says what is wrong with it
        if pinned:
            found[dockerfile.resolve()] = _shown(dockerfile)
    return list(found.values())


def _shown(path: Path) -> Path:
    """The path as the user would name it: relative to here when it is below."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def suite_of(dockerfile: Path, recipes: Iterable[Path]) -> str:
    """The one Debian suite the recipes that build in this Dockerfile make its image from."""
    target, suites, seen = dockerfile.resolve(), set(), set()
    for recipe in recipes:
        if recipe.resolve() in seen:
            continue
        seen.add(recipe.resolve())
        try:
            plan, _ = load_plan(recipe, Overrides())
            mine = plan.image.dockerfile.resolve() == target
            suite = build_suite(plan) if mine else None
        except BuilderError:
            continue
        if suite:
            suites.add(suite)
    if len(suites) != 1:
        raise InputError(
            f"{dockerfile}: its image is made from "
            + (f"several suites ({', '.join(sorted(suites))})" if suites else "no Debian suite")
            + " by the recipes that build in it, so bump cannot tell whose index its pins follow",
            hint="name the recipes that build in it beside it, or edit its pins by hand",
        )
    return suites.pop()


def bump_dockerfile(
    path: Path, recipes: Iterable[Path], write: bool, index: Index, cache: Cache, sink: LineSink
) -> DockerfileOutcome:
    outcome = DockerfileOutcome(path, "current", "")
    try:
        pins = read_pins(path.read_text(encoding="utf-8"), str(path))
        if not pins:
            outcome.status = "no-pins"
            outcome.text = f"{path}: no Debian source pins: nothing to bump"
            return outcome
        outcome.suite = suite_of(path, recipes)
        outcome.pins = [_bump_pin(path, pin, outcome, index, cache, sink) for pin in pins]
        refused = [p for p in outcome.pins if p.error is not None]
        if refused:
            outcome.status, outcome.error = "refused", refused[0].error
            outcome.text = f"{path}: refused: {len(refused)} of its pins (above); left as it was"
            return outcome
        bumped = [p for p in outcome.pins if p.status == "bumped"]
        if bumped and write:
            rewrite_dockerfile(path, new_values(bumped))
            outcome.written = True
        outcome.status = "bumped" if bumped else "current"
        outcome.text = _summary(path, outcome, bumped)
    except BuilderError as exc:
        outcome.status, outcome.error = "refused", exc
        outcome.text = f"{path}: refused: {exc.message}"
    except (OSError, UnicodeDecodeError) as exc:  # this host's side: the Dockerfile's directory
        outcome.status = "refused"
        outcome.error = InputError(f"{path}: cannot read or write it: {exc}")
        outcome.text = f"{path}: refused: {outcome.error.message}"
    return outcome


def _summary(path: Path, outcome: DockerfileOutcome, bumped: list[PinOutcome]) -> str:
    if not bumped:
        return f"{path}: its {len(outcome.pins)} source pins are up to date ({outcome.suite})"
    tail = "written" if outcome.written else f"--write rewrites {path.name}"
    return f"{path}: {len(bumped)} of its {len(outcome.pins)} source pins move; {tail}"


def new_values(bumped: list[PinOutcome]) -> dict[str, str]:
    values = {}
    for outcome in bumped:
        assert outcome.version is not None and outcome.sha256 is not None
        values[f"{outcome.pin.name}_VERSION"] = outcome.version
        if outcome.orig_changed:
            values[f"{outcome.pin.name}_SHA256"] = outcome.sha256
    return values


def _bump_pin(
    path: Path,
    pin: SourcePin,
    outcome: DockerfileOutcome,
    index: Index,
    cache: Cache,
    sink: LineSink,
) -> PinOutcome:
    """The newest listed version of the pin's package whose files verify; listed versions whose
    files are missing are skipped (said in `outcome.skipped`)."""
    suite = outcome.suite
    assert suite is not None
    try:
        entries = index.entries(suite, pin.package)
        if pin.version not in {entry.version for entry in entries}:
            outcome.skipped.append(_unlisted(path, pin, suite))
        newer = [e for e in entries if compare_versions(e.version, pin.version) > 0]
        for entry in sorted(newer, key=functools.cmp_to_key(_newer_first)):
            found = _verified(path, pin, entry, suite, index.mirror, cache, sink)
            if found is None:
                outcome.skipped.append(
                    f"{path}: skipped {pin.package} {entry.version}: listed in {suite}'s "
                    "Sources but its files are missing"
                )
                continue
            outcome.skipped += _elsewhere(path, pin, entry.version, suite, index)
            return _moved(path, pin, entry.version, suite, *found)
        outcome.skipped += _elsewhere(path, pin, pin.version, suite, index)
        return PinOutcome(pin, "current", f"{path}: {pin.package} up to date ({pin.version})")
    except BuilderError as exc:
        text = f"{path}: {pin.package}: refused: {exc.message}"
        return PinOutcome(pin, "refused", text, error=exc)


def _newer_first(a: SourceEntry, b: SourceEntry) -> int:
    return compare_versions(b.version, a.version)


def _verified(
    path: Path,
    pin: SourcePin,
    entry: SourceEntry,
    suite: str,
    mirror: str,
    cache: Cache,
    sink: LineSink,
) -> tuple[str, str] | None:
    """The version's orig tarball (name, sha256) by the chain: its .dsc against Sources, the
    tarball against the .dsc (downloaded only when the upstream version changed: a new Debian
    revision keeps the pinned tarball). None when the mirror lacks a file."""
    found = debian_chain.verified_orig(entry, suite, mirror, sink)
    if found is None:
        return None
    name, sha256 = found
    if name != pin.orig_name(entry.version):
        raise InputError(
            f"{entry.version}'s .dsc names the orig tarball {name}, but {path.name} checks "
            f"{pin.orig_name(entry.version)} for it (${{{pin.name}_VERSION%-*}}, "
            f"{pin.suffix}): edit the pin and its uses by hand"
        )
    url = f"{mirror}/{entry.directory}/{name}"
    if name == pin.orig_name():
        if sha256 != pin.sha256:
            raise InputError(
                f"{entry.version}'s verified .dsc gives {name} the sha256 {sha256}, not the "
                f"pinned {pin.sha256}: one file name, two contents",
                hint="the pin or the archive is wrong: check the pinned tarball by hand",
            )
        return found if debian_index.exists(url) else None
    return found if debian_chain.cached_orig(url, name, sha256, cache, sink) else None


def _moved(
    path: Path, pin: SourcePin, version: str, suite: str, orig: str, sha256: str
) -> PinOutcome:
    same = sha256 == pin.sha256
    text = f"{path}: {pin.package} {pin.version} -> {version} ({suite}'s; " + (
        f"the same orig tarball {orig}, sha256 unchanged: only {pin.name}_VERSION changes)"
        if same
        else f"orig tarball {orig}, sha256 {sha256})"
    )
    return PinOutcome(pin, "bumped", text, version, orig, sha256)


def _unlisted(path: Path, pin: SourcePin, suite: str) -> str:
    return (
        f"{path}: warning: {pin.package} {pin.version} is not listed in {suite}'s Sources, so "
        f"the image's `apt-get source {pin.package}={pin.version}` fails there and falls back "
        f"to what {suite} lists (its sha256 check decides)"
    )


def _elsewhere(path: Path, pin: SourcePin, taken: str, suite: str, index: Index) -> list[str]:
    def listed(other: str) -> dict[str, str]:
        versions = [entry.version for entry in index.entries(other, pin.package)]
        newest = max(versions, key=functools.cmp_to_key(compare_versions), default=None)
        return {pin.package: newest} if newest else {}

    try:
        beyond = beyond_the_image(index, suite, {pin.package: taken}, listed)
    except BuilderError as exc:  # a note's check (an expired -updates index) refuses nothing
        return [f"{path}: {suite}-updates/-security not checked for {pin.package}: {exc.message}"]
    return [
        f"{path}: {name} {version} is in {other}, not taken: the image's apt sources name "
        f"{suite} only, so `apt-get source` cannot fetch it there"
        for name, version, other in beyond
    ]


def document(outcome: DockerfileOutcome) -> dict[str, Any]:
    return {
        "dockerfile": str(outcome.path),
        "status": outcome.status,
        "suite": outcome.suite,
        "skipped": outcome.skipped,
        "written": outcome.written,
        "message": outcome.text,
        "pins": [
            {
                "package": p.pin.package,
                "arg": f"{p.pin.name}_VERSION",
                "status": p.status,
                "version": p.pin.version,
                "sha256": p.pin.sha256,
                "new_version": p.version,
                "new_sha256": p.sha256,
                "orig": p.orig or p.pin.orig_name(),
                "orig_changed": p.orig_changed,
                "message": p.text,
            }
            for p in outcome.pins
        ],
    }
