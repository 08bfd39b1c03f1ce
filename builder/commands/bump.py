"""`qga-builder bump [RECIPE...]`: the newest point release of a recipe's QEMU series that the
configured Debian mirror lists (InRelease verified with gpgv, Sources, .dsc and orig tarball
each checked against the one before), whose files download, and on which the recipe's patches
apply. Reported by default; `--write` rewrites the pin's two values in the recipe's text
(comments and layout kept). A recipe whose chain breaks anywhere is refused and left as it is.
"""

from __future__ import annotations

import argparse
import functools
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from builder import log
from builder.commands.common import load_plan, print_json
from builder.config.overrides import Overrides
from builder.config.plan import Plan, SourcePlan
from builder.config.recipe_pins import renamed, rewrite_recipe
from builder.errors import BuilderError, InputError, PatchError, UsageError
from builder.formats.checksums import sha256_file
from builder.host import debian, debian_index
from builder.host.cache import Cache
from builder.host.debian_index import Missing, SourceEntry, compare_versions
from builder.host.files import replace_file
from builder.host.locks import exclusive
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


class Index:
    """Each suite's verified Sources, fetched once per run (recipes share suites)."""

    def __init__(
        self,
        mirror: str,
        keyring: Path,
        workdir: Path,
        sink: LineSink,
        allow_expired: bool = False,
    ) -> None:
        self.mirror, self._keyring, self._workdir, self._sink = mirror, keyring, workdir, sink
        self._allow_expired = allow_expired
        self._texts: dict[str, str | BuilderError] = {}
        self._entries: dict[tuple[str, str], list[SourceEntry]] = {}

    def entries(self, suite: str, package: str) -> list[SourceEntry]:
        if suite not in self._texts:
            try:
                release = debian_index.verified_release(
                    self.mirror,
                    suite,
                    self._keyring,
                    self._workdir,
                    self._sink,
                    self._allow_expired,
                )
                self._texts[suite] = debian_index.sources_text(
                    self.mirror, suite, release, self._workdir, self._sink
                )
            except BuilderError as exc:
                self._texts[suite] = exc  # every recipe of this suite is refused alike
        known = self._texts[suite]
        if isinstance(known, BuilderError):
            raise known
        key = (suite, package)
        if key not in self._entries:
            self._entries[key] = debian_index.source_entries(known, package)
        return self._entries[key]


def cmd_bump(args: argparse.Namespace) -> int:
    recipes = list(args.recipes) or sorted(Path("recipes").glob("*.yaml"))
    if not recipes:
        raise UsageError("no RECIPE given, and no recipes/*.yaml here")
    logger = log.get_logger(command="bump")

    def sink(line: str) -> None:
        logger.info(line)

    mirror = debian.host_mirror()
    cache = Cache.default()
    suites = tuple(args.suite or DEFAULT_SUITES)
    news: dict[str, tuple[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="qga-bump-") as work:
        index = Index(mirror, args.keyring, Path(work), sink, args.allow_expired_index)
        outcomes = [
            bump_one(path, suites, args.write, index, cache, news, sink) for path in recipes
        ]
    notes = [text for _, text in news.values()]
    if args.json:
        print_json({"recipes": [_document(o) for o in outcomes], "newer_series": notes})
    else:
        lines = [line for o in outcomes for line in (*o.skipped, o.text)] + notes
        sys.stdout.write("".join(f"{log.neutralize_lines(line)}\n" for line in lines))
    refused = [o for o in outcomes if o.error is not None]
    if refused:
        first = refused[0].error
        assert first is not None
        raise type(first)(
            f"bump refused {len(refused)} of {len(outcomes)} recipe(s), left as they were: "
            + ", ".join(str(o.recipe) for o in refused),
            hint="each refusal's line above says the step and why",
        )
    return 0


def bump_one(
    path: Path,
    suites: tuple[str, ...],
    write: bool,
    index: Index,
    cache: Cache,
    news: dict[str, tuple[str, str]],
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
            found = fetch(candidate, pin, index.mirror, cache, sink)
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
    pin: Pin, suites: tuple[str, ...], index: Index, news: dict[str, tuple[str, str]]
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
                _note_new_series(news, name, entry.version, release, suite, newest)
            if name == series.series_of(pin.release) and pin.older_than(entry.version):
                found.setdefault(entry.version, Candidate(entry, suite, release))
    return sorted(found.values(), key=functools.cmp_to_key(_newer_first))


def _newer_first(a: Candidate, b: Candidate) -> int:
    return compare_versions(b.entry.version, a.entry.version)


def _note_new_series(
    news: dict[str, tuple[str, str]], name: str, version: str, release: str, suite: str, newest: str
) -> None:
    known = news.get(name)
    if known is None or compare_versions(version, known[0]) > 0:
        news[name] = (
            version,
            f"QEMU {release} is out (Debian {version} in {suite}): no patch set of ours for "
            f"{name}; the newest is {newest} (patches/qemu-{newest}/)",
        )


def fetch(
    candidate: Candidate, pin: Pin, mirror: str, cache: Cache, sink: LineSink
) -> Found | None:
    """The candidate's .dsc (checked against Sources), then its orig tarball (against the
    .dsc): None when the mirror lacks either; a digest that differs is a refusal."""
    entry, suite = candidate.entry, candidate.suite
    dscs = [name for name in entry.files if name.endswith(".dsc")]
    if len(dscs) != 1:
        raise InputError(f"{suite}'s Sources lists {len(dscs)} .dsc files for {entry.version}")
    base = f"{mirror}/{entry.directory}"
    with tempfile.TemporaryDirectory(prefix="qga-bump-dsc-") as work:
        dsc = Path(work) / dscs[0]
        sink(f"downloading {base}/{dscs[0]}")
        try:
            digest = debian_index.download(f"{base}/{dscs[0]}", dsc)
        except Missing:
            return None
        if digest != entry.files[dscs[0]]:
            raise InputError(
                f"{dscs[0]}: sha256 {digest} is not {entry.files[dscs[0]]}, which {suite}'s "
                "verified Sources gives",
                hint="the mirror serves a file the archive did not sign for: do not use it",
            )
        fields = debian_index.dsc_fields(dsc.read_text(errors="replace"))
    origs = debian_index.orig_tarballs(debian_index.checksums(fields), pin.package, entry.version)
    if len(origs) != 1:
        raise InputError(f"{dscs[0]} names {len(origs)} orig tarballs, not one")
    ((name, sha256),) = origs.items()
    if entry.files.get(name) != sha256:
        raise InputError(f"{dscs[0]} and {suite}'s Sources give {name} different sha256")
    tarball = _orig(f"{base}/{name}", name, sha256, cache, sink)
    if tarball is None:
        return None
    version = series.read_version(tarball)
    if version != candidate.release:
        raise InputError(
            f"{name} holds QEMU {version[:40]!r} (its VERSION), not {candidate.release}"
        )
    return Found(candidate, name, sha256, tarball)


def _orig(url: str, name: str, sha256: str, cache: Cache, sink: LineSink) -> Path | None:
    """The orig tarball, kept where a run of `source.mirror` looks for it (by digest)."""
    path = cache.sources / "mirror" / f"{sha256[:16]}-{name}"
    with exclusive(cache.lock_path(f"source-{sha256[:16]}"), f"the source {name}", sink):
        if path.is_file() and sha256_file(path) == sha256:
            return path if debian_index.exists(url) else None  # others fetch it from there
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.bump-{os.getpid()}")
        sink(f"downloading {url}")
        try:
            digest = debian_index.download(url, partial)
            if digest != sha256:
                raise InputError(
                    f"{name}: sha256 {digest} is not {sha256}, which its verified .dsc gives",
                    hint="the mirror serves a file the archive did not sign for: do not use it",
                )
            os.replace(partial, path)
        except Missing:
            return None
        finally:
            partial.unlink(missing_ok=True)  # gone once renamed; never left behind
    return path


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
