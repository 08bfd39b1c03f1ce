"""`qga-builder bump [RECIPE...] [DOCKERFILE...]`: the newest point release of a recipe's QEMU
series that the configured Debian mirror lists (InRelease verified with gpgv, Sources, .dsc and
orig tarball each checked against the one before), whose files download, and on which the
recipe's patches apply. Reported by default; `--write` rewrites the pin's two values in the
recipe's text (comments and layout kept). A recipe whose chain breaks anywhere is refused and
left as it is. Beside the recipes: a Dockerfile's Debian source pins (bump_dockerfile), the
libraries a static Linux agent links against its recipe's lock (bump_locks), and whether our
newest patch set applies to a series newer than any of ours (here, with the recipes').
"""

from __future__ import annotations

import argparse
import functools
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from builder import log
from builder.commands import bump_dockerfile, bump_guests, bump_locks
from builder.commands.common import load_plan, print_json
from builder.config.overrides import Overrides
from builder.config.plan import Plan, SourcePlan
from builder.config.recipe_pins import renamed, rewrite_recipe
from builder.errors import BuilderError, InputError, PatchError, UpdatePendingError, UsageError
from builder.host import debian, debian_chain
from builder.host.cache import Cache
from builder.host.debian_chain import Index
from builder.host.debian_index import SourceEntry, compare_versions
from builder.host.files import replace_file
from builder.log import LineSink
from builder.stages import series

DEFAULT_SUITES = ("unstable",)  # for source.mirror pins; source.debian is searched in its own


@dataclass(frozen=True)
class Pin:
    kind: Literal["debian", "mirror"]
    package: str
    version: str  # source.debian: the Debian version; source.mirror: the orig's upstream one
    release: str  # the QEMU release it is
    suite: str | None  # source.debian's suite (apt-get source fetches from it, nowhere else)

    def older_than(self, debian_version: str) -> bool:
        if self.kind == "debian":
            return compare_versions(debian_version, self.version) > 0
        return compare_versions(debian.upstream_version(debian_version), self.version) > 0


@dataclass(frozen=True)
class Candidate:
    entry: SourceEntry
    suite: str
    release: str


@dataclass(frozen=True)
class Found:
    candidate: Candidate
    file: str
    sha256: str
    tarball: Path

    @property
    def path(self) -> str:
        return f"{self.candidate.entry.directory}/{self.file}"


@dataclass
class Outcome:
    recipe: Path
    status: Literal["bumped", "current", "refused", "not-debian"]
    text: str
    skipped: list[str] = field(default_factory=list)
    found: Found | None = None
    written: bool = False
    error: BuilderError | None = None


@dataclass
class NewSeries:
    """A series the mirror lists that no patch set of ours serves: the versions seen of it,
    and (once checked) whether our newest patch set applies to its newest verified tarball."""

    name: str
    newest_set: str
    candidates: dict[str, Candidate] = field(default_factory=dict)
    text: str = ""
    check: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    recipes: list[Outcome]
    dockerfiles: list[bump_dockerfile.DockerfileOutcome]
    locks: list[bump_locks.LockOutcome]
    news: list[NewSeries]
    guests: list[bump_guests.GuestOutcome] = field(default_factory=list)


def cmd_bump(args: argparse.Namespace) -> int:
    recipes, dockerfiles = _targets(list(args.recipes))
    whole_project = not args.recipes  # then vm-test's cached guests are checked too
    logger = log.get_logger(command="bump")

    def sink(line: str) -> None:
        logger.info(line)

    mirror = debian.host_mirror()
    cache = Cache.default()
    suites = tuple(args.suite or DEFAULT_SUITES)
    news: dict[str, NewSeries] = {}
    with tempfile.TemporaryDirectory(prefix="qga-bump-") as work:
        index = Index(mirror, args.keyring, Path(work), sink, args.allow_expired_index)
        report = Report(
            [bump_one(path, suites, args.write, index, cache, news, sink) for path in recipes],
            [
                bump_dockerfile.bump_dockerfile(
                    path, [*recipes, *_project_recipes(path)], args.write, index, cache, sink
                )
                for path in dockerfiles
            ],
            bump_locks.check_locks(recipes, index),
            [],
        )
        report.news = [check_new_series(item, mirror, cache, sink) for item in news.values()]
        if args.write:
            bump_locks.remake_stale(report.locks, cache, sink)
        if whole_project:
            report.guests = bump_guests.check_guests(cache, index)
    _print(report, args.json)
    return _exit_code(report)


def _targets(given: list[Path]) -> tuple[list[Path], list[Path]]:
    """The recipes (*.yaml, *.yml) and Dockerfiles (anything else) given; none given: every
    recipes/*.yaml, and the Dockerfiles they build in that pin Debian sources."""
    if given:  # a path that is not there is a recipe: its error names the one probably meant
        dockerfiles = [p for p in given if p.suffix not in (".yaml", ".yml") and p.is_file()]
        return [path for path in given if path not in dockerfiles], dockerfiles
    recipes = sorted(Path("recipes").glob("*.yaml"))
    if not recipes:
        raise UsageError("no RECIPE given, and no recipes/*.yaml here")
    return recipes, bump_dockerfile.pinned_dockerfiles(recipes)


def _project_recipes(dockerfile: Path) -> list[Path]:
    """The recipes that may build in a Dockerfile: ./recipes/ and the one beside it."""
    return sorted(
        {*Path("recipes").glob("*.yaml"), *(dockerfile.parent / "recipes").glob("*.yaml")}
    )


def _print(report: Report, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "recipes": [_document(o) for o in report.recipes],
                "dockerfiles": [bump_dockerfile.document(o) for o in report.dockerfiles],
                "locks": [bump_locks.document(o) for o in report.locks],
                "guests": [bump_guests.document(o) for o in report.guests],
                "newer_series": [item.text for item in report.news],
                "newer_series_checks": [item.check for item in report.news],
            }
        )
        return
    lines = [line for o in report.recipes for line in (*o.skipped, o.text)]
    for outcome in report.dockerfiles:
        lines += [*outcome.skipped, *(pin.text for pin in outcome.pins), outcome.text]
    lines += [line for o in report.locks for line in (*o.notes, o.text)]
    lines += [o.text for o in report.guests]
    lines += [item.text for item in report.news]
    sys.stdout.write("".join(f"{log.neutralize_lines(line)}\n" for line in lines))


def _exit_code(report: Report) -> int:
    """The first refusal's error (recipes, then Dockerfiles, then locks); else a stale lock's
    (bump reports it and writes nothing for it); else 0."""
    groups = [
        ("recipe(s)", [(o.recipe, o.error) for o in report.recipes]),
        ("Dockerfile(s)", [(o.path, o.error) for o in report.dockerfiles]),
        ("lock check(s)", [(o.recipe, o.error) for o in report.locks]),
        ("guest check(s)", [(o.init, o.error) for o in report.guests]),
    ]
    counts, names, errors = [], [], []
    for kind, items in groups:
        refused = [(path, error) for path, error in items if error is not None]
        if refused:
            counts.append(f"{len(refused)} of {len(items)} {kind}")
            names += [str(path) for path, _ in refused]
            errors += [error for _, error in refused]
    if errors:
        # A broken chain (3) outranks a patches refusal (4), which the bump workflow goes on
        # after: a signature failure elsewhere must stop it.
        errors.sort(key=lambda error: error.exit_code == PatchError.exit_code)
        raise type(errors[0])(
            f"bump refused {' and '.join(counts)}, left as they were: {', '.join(names)}",
            hint="each refusal's line above says the step and why",
        )
    stale = [str(o.recipe) for o in report.locks if o.status == "stale"]
    stale += [f"the vm-test {o.init} guest" for o in report.guests if o.status == "stale"]
    if stale:
        raise UpdatePendingError(
            f"bump found {len(stale)} lock(s) or cached guest(s) behind their suite's updates "
            f"(of the libraries the agent links; of the guest's kernel, init, udev, libc): "
            f"{', '.join(stale)}",
            hint="each one's line above gives the commands that remake the image (and the lock)",
        )
    return 0


def bump_one(
    path: Path,
    suites: tuple[str, ...],
    write: bool,
    index: Index,
    cache: Cache,
    news: dict[str, NewSeries],
    sink: LineSink,
) -> Outcome:
    skipped: list[str] = []
    try:
        plan, _ = load_plan(path, Overrides())
        pin = pin_of(plan.source)
        if pin is None:
            text = f"{path}: source.{plan.source.kind} is not pinned from Debian: nothing to bump"
            return Outcome(path, "not-debian", text)
        search = (pin.suite,) if pin.suite else suites
        if pin.kind == "debian" and pin.suite:
            skipped += _unlisted(path, pin, pin.suite, index)
        for candidate in candidates(pin, search, index, news):
            found = fetch(candidate, index.mirror, cache, sink)
            if found is None:
                skipped.append(
                    f"{path}: skipped {candidate.entry.version}: listed in {candidate.suite}'s "
                    "Sources but its files are missing"
                )
                continue
            check_patches(plan, found)
            if write:
                renames = _renames(pin, found)
                rewrite_recipe(path, pin.kind, new_values(pin, found), renames)
                skipped += _follow_in_readme(path, pin, renames)
            return Outcome(
                path, "bumped", _bumped_text(path, pin, found, write), skipped, found, write
            )
        return Outcome(path, "current", f"{path}: up to date ({pin.release})", skipped)
    except BuilderError as exc:
        return Outcome(path, "refused", f"{path}: refused: {exc.message}", skipped, error=exc)
    except OSError as exc:  # this host's side: the cache, the recipe's directory
        error = InputError(f"{path}: cannot write: {exc}")
        return Outcome(path, "refused", f"{path}: refused: {error.message}", skipped, error=error)


def _unlisted(path: Path, pin: Pin, suite: str, index: Index) -> list[str]:
    """A source.debian pin its suite no longer lists: apt-get source cannot fetch it there, so
    a fresh host's run fails although nothing newer may exist (said, not refused)."""
    listed = {entry.version for entry in index.entries(suite, pin.package)}
    if pin.version in listed:
        return []
    return [
        f"{path}: warning: {pin.package} {pin.version} is no longer listed in {suite}'s "
        "Sources, so `apt-get source` cannot fetch it there: pin its orig tarball by "
        "`source.mirror` (its path in the pool) if the mirror still holds it"
    ]


def pin_of(source: SourcePlan) -> Pin | None:
    if source.kind == "debian" and source.package and source.version:
        release = debian.qemu_release(source.version)
        if release is None:
            raise InputError(f"source.debian: {source.version} is no QEMU release's version")
        return Pin("debian", source.package, source.version, release, source.suite)
    if source.kind == "mirror" and source.mirror_path:
        upstream = debian.orig_tarball_version(source.mirror_path)
        release = debian.qemu_release(upstream)
        name = Path(source.mirror_path).name
        if release is None:
            raise InputError(f"source.mirror: {name} is no QEMU release's orig tarball")
        return Pin("mirror", name.split("_", 1)[0], upstream, release, None)
    return None


def _series_key(name: str) -> tuple[int, int]:
    major, minor = series.series_of(name).split(".")
    return int(major), int(minor)


def candidates(
    pin: Pin, suites: tuple[str, ...], index: Index, news: dict[str, NewSeries]
) -> list[Candidate]:
    """The versions the suites list of the pin's series, newer than it, newest first; on the
    way, a series newer than any patch set of ours is noted (once per series)."""
    supported = series.supported_series()
    newest = max(supported, key=_series_key) if supported else "0.0"
    found: dict[str, Candidate] = {}
    for suite in suites:
        for entry in index.entries(suite, pin.package):
            release = debian.qemu_release(entry.version)
            if release is None:
                continue
            name = series.series_of(release)
            if _series_key(name) > _series_key(newest):
                item = news.setdefault(name, NewSeries(name, newest))
                item.candidates.setdefault(entry.version, Candidate(entry, suite, release))
            if name == series.series_of(pin.release) and pin.older_than(entry.version):
                found.setdefault(entry.version, Candidate(entry, suite, release))
    return sorted(found.values(), key=functools.cmp_to_key(_newer_first))


def _newer_first(a: Candidate, b: Candidate) -> int:
    return compare_versions(b.entry.version, a.entry.version)


def check_new_series(item: NewSeries, mirror: str, cache: Cache, sink: LineSink) -> NewSeries:
    """The note on a series newer than any patch set of ours, with whether our newest patch
    set applies to its newest listed version whose files verify (as `patches check` tries a
    source: every patch the set pins). A version whose files are missing is passed over; a
    chain that breaks is said in the note (nothing is written for a note)."""
    listed = sorted(item.candidates.values(), key=functools.cmp_to_key(_newer_first))
    top = listed[0]
    item.text = (
        f"QEMU {top.release} is out (Debian {top.entry.version} in {top.suite}): no patch set "
        f"of ours for {item.name}; the newest is {item.newest_set} "
        f"(patches/qemu-{item.newest_set}/)"
    )
    item.check = {
        "series": item.name,
        "release": top.release,
        "debian_version": top.entry.version,
        "suite": top.suite,
        "patch_set": f"patches/qemu-{item.newest_set}/",
        "skipped": [],
        "tried": None,
        "applies": None,
        "patches": [],
    }
    try:
        said = _try_newest_set(item, listed, mirror, cache, sink)
    except BuilderError as exc:
        said = f"not tried: {exc.message}"
    except OSError as exc:  # this host's side: the cache the tarball is kept in
        said = f"not tried: cannot keep its tarball: {exc}"
    item.check["message"] = said
    item.text += f"; {said}"
    return item


def _try_newest_set(
    item: NewSeries, listed: list[Candidate], mirror: str, cache: Cache, sink: LineSink
) -> str:
    for candidate in listed:
        found = fetch(candidate, mirror, cache, sink)
        if found is None:
            item.check["skipped"].append(candidate.entry.version)
            continue
        trials = newest_set_trials(item.newest_set, found.tarball)
        failed = [t for t in trials if not t.applies]
        version = candidate.entry.version
        item.check |= {
            "tried": {"release": candidate.release, "debian_version": version, "file": found.file},
            "applies": not failed,
            "patches": [
                {"name": t.patch.name, "applies": t.applies, "detail": t.detail} for t in trials
            ],
        }
        where = f"{candidate.release}'s verified orig tarball (Debian {version})"
        if not failed:
            return f"patches/qemu-{item.newest_set}/ applies to {where}: all {len(trials)} patches"
        return f"patches/qemu-{item.newest_set}/ does not apply to {where}: " + "; ".join(
            f"{t.patch.name}: {t.detail}" for t in failed
        )
    return "not tried: the files of every version listed are missing from the mirror"


def newest_set_trials(name: str, tarball: Path) -> list[series.PatchTrial]:
    """Every patch our set for series `name` pins, tried on the tarball (`patches check`)."""
    return series.try_patches(tarball, series.patch_set(name))


def fetch(candidate: Candidate, mirror: str, cache: Cache, sink: LineSink) -> Found | None:
    """The candidate's .dsc (checked against Sources), then its orig tarball (against the
    .dsc), its VERSION read: None when the mirror lacks either; a digest that differs is a
    refusal."""
    entry = candidate.entry
    orig = debian_chain.verified_orig(entry, candidate.suite, mirror, sink)
    if orig is None:
        return None
    name, sha256 = orig
    url = f"{mirror}/{entry.directory}/{name}"
    tarball = debian_chain.cached_orig(url, name, sha256, cache, sink)
    if tarball is None:
        return None
    version = series.read_version(tarball)
    if version != candidate.release:
        raise InputError(
            f"{name} holds QEMU {version[:40]!r} (its VERSION), not {candidate.release}"
        )
    return Found(candidate, name, sha256, tarball)


def patch_trials(plan: Plan, release: str, tarball: Path) -> list[series.PatchTrial]:
    """The patches a run of the recipe on that release applies, tried on the tarball."""
    resolved = series.resolve_plan(plan, release)
    return series.try_patches(tarball, [patch.path for patch in resolved.patches])


def check_patches(plan: Plan, found: Found) -> None:
    release, version = found.candidate.release, found.candidate.entry.version
    failed = [t for t in patch_trials(plan, release, found.tarball) if not t.applies]
    if failed:
        raise PatchError(
            f"patches on QEMU {release} (Debian {version}): "
            + "; ".join(f"{t.patch.name} does not apply: {t.detail}" for t in failed),
            hint=f"the pin stays; `qga-builder patches check {found.tarball}` tries them again",
        )


def _renames(pin: Pin, found: Found) -> list[tuple[str, str]]:
    """What the recipe's comments and the README's series table say of the old pin: its
    Debian version (source.debian), then its QEMU release."""
    renames = [(pin.release, found.candidate.release)]
    if pin.kind == "debian":
        renames.insert(0, (pin.version, found.candidate.entry.version))
    return renames


def _follow_in_readme(path: Path, pin: Pin, renames: list[tuple[str, str]]) -> list[str]:
    """The project's README series table (the recipe in <project>/recipes/): the series' row
    says the new release. Nothing else of the README changes."""
    readme = path.resolve().parent.parent / "README.md"
    if not readme.is_file():
        return []
    text = readme.read_text(encoding="utf-8")
    row = f"| {series.series_of(pin.release)} |"
    lines = text.splitlines(keepends=True)
    changed = [i for i, line in enumerate(lines) if line.startswith(row)]
    for index in changed:
        lines[index] = renamed(lines[index], renames)
    if "".join(lines) == text:
        return []
    replace_file(readme, "".join(lines).encode("utf-8"), stat.S_IMODE(readme.stat().st_mode))
    return [f"{path}: {readme.name}'s series table says {renames[-1][1]} now"]


def new_values(pin: Pin, found: Found) -> dict[str, str]:
    if pin.kind == "debian":
        return {"version": found.candidate.entry.version, "sha256": found.sha256}
    return {"path": found.path, "sha256": found.sha256}


def _bumped_text(path: Path, pin: Pin, found: Found, written: bool) -> str:
    candidate = found.candidate
    return (
        f"{path}: QEMU {pin.release} -> {candidate.release} (Debian version "
        f"{candidate.entry.version}, file {found.file}, sha256 {found.sha256})"
        + ("; written" if written else "; --write rewrites the recipe")
    )


def _document(outcome: Outcome) -> dict[str, Any]:
    document: dict[str, Any] = {
        "recipe": str(outcome.recipe),
        "status": outcome.status,
        "skipped": outcome.skipped,
        "written": outcome.written,
        "message": outcome.text,
    }
    if outcome.found is not None:
        candidate = outcome.found.candidate
        document |= {
            "release": candidate.release,
            "debian_version": candidate.entry.version,
            "suite": candidate.suite,
            "path": outcome.found.path,
            "sha256": outcome.found.sha256,
        }
    return document
