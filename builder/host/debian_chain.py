"""One run's view of the configured Debian mirror, for `bump`: each suite's InRelease verified
once and its indexes fetched once (recipes, a Dockerfile's pins and the locks share suites);
then the chain below an index entry: its .dsc against the suite's verified Sources, the orig
tarball against the .dsc (kept in the cache by digest).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from builder.errors import BuilderError, InputError
from builder.formats.checksums import sha256_file
from builder.host.cache import Cache
from builder.host.debian_index import (
    MAX_DSC_BYTES,
    SOURCES_INDEXES,
    Missing,
    NoSuite,
    SourceEntry,
    Unpack,
    binary_versions,
    checksums,
    download,
    dsc_fields,
    exists,
    index_text,
    orig_tarballs,
    packages_indexes,
    source_entries,
    verified_release,
)
from builder.host.locks import exclusive
from builder.log import LineSink


class Index:
    """Each suite's verified InRelease and indexes, fetched once per run (recipes, a
    Dockerfile's pins and the locks share suites). A suite that fails is refused alike for
    every use of it."""

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
        self._known: dict[tuple[str, str], object] = {}  # (suite, what) -> text/fields or error
        self._entries: dict[tuple[str, str], list[SourceEntry]] = {}

    def _once(self, key: tuple[str, str], make: Callable[[], object]) -> object:
        if key not in self._known:
            try:
                self._known[key] = make()
            except BuilderError as exc:
                self._known[key] = exc
        known = self._known[key]
        if isinstance(known, BuilderError):
            raise known
        return known

    def release(self, suite: str) -> dict[str, str]:
        def verify() -> dict[str, str]:
            return verified_release(
                self.mirror, suite, self._keyring, self._workdir, self._sink, self._allow_expired
            )

        known = self._once((suite, "InRelease"), verify)
        assert isinstance(known, dict)
        return known

    def served(self, suite: str) -> bool:
        """Whether the mirror serves the suite at all (an InRelease that is there but does not
        verify is a refusal, not a suite that is absent)."""
        try:
            self.release(suite)
        except NoSuite:
            return False
        return True

    def _text(self, suite: str, what: str, indexes: tuple[tuple[str, Unpack], ...]) -> str:
        def fetch() -> str:
            release = self.release(suite)
            return index_text(self.mirror, suite, release, indexes, self._workdir, self._sink)

        known = self._once((suite, what), fetch)
        assert isinstance(known, str)
        return known

    def entries(self, suite: str, package: str) -> list[SourceEntry]:
        """Every version of a source package the suite's Sources lists."""
        key = (suite, package)
        if key not in self._entries:
            text = self._text(suite, "Sources", SOURCES_INDEXES)
            self._entries[key] = source_entries(text, package)
        return self._entries[key]

    def binaries(self, suite: str, architecture: str, packages: Iterable[str]) -> dict[str, str]:
        """The version the suite's Packages (of that architecture) lists of each package. Only
        the answer is kept: an architecture's Packages is tens of MB of text."""
        wanted = frozenset(packages)

        def read() -> dict[str, str]:
            indexes = packages_indexes(architecture)
            release = self.release(suite)
            text = index_text(self.mirror, suite, release, indexes, self._workdir, self._sink)
            return binary_versions(text, wanted)

        known = self._once((suite, f"Packages-{architecture} {sorted(wanted)}"), read)
        assert isinstance(known, dict)
        return known

    def updates_suites(self, suite: str) -> list[str]:
        """SUITE-updates and SUITE-security, those the mirror serves (never another host)."""
        return [name for name in (f"{suite}-updates", f"{suite}-security") if self.served(name)]


def verified_orig(
    entry: SourceEntry, suite: str, mirror: str, sink: LineSink
) -> tuple[str, str] | None:
    """The entry's .dsc, checked against the suite's verified Sources: the name and sha256 of
    the one orig tarball it names (which Sources must list alike). None when the mirror lacks
    the .dsc; a digest that differs is a refusal."""
    dscs = [name for name in entry.files if name.endswith(".dsc")]
    if len(dscs) != 1:
        raise InputError(f"{suite}'s Sources lists {len(dscs)} .dsc files for {entry.version}")
    url = f"{mirror}/{entry.directory}/{dscs[0]}"
    with tempfile.TemporaryDirectory(prefix="qga-bump-dsc-") as work:
        dsc = Path(work) / dscs[0]
        sink(f"downloading {url}")
        try:
            digest = download(url, dsc, MAX_DSC_BYTES)
        except Missing:
            return None
        if digest != entry.files[dscs[0]]:
            raise InputError(
                f"{dscs[0]}: sha256 {digest} is not {entry.files[dscs[0]]}, which {suite}'s "
                "verified Sources gives",
                hint="the mirror serves a file the archive did not sign for: do not use it",
            )
        fields = dsc_fields(dsc.read_text(errors="replace"))
    origs = orig_tarballs(checksums(fields), entry.package, entry.version)
    if len(origs) != 1:
        raise InputError(f"{dscs[0]} names {len(origs)} orig tarballs, not one")
    ((name, sha256),) = origs.items()
    if entry.files.get(name) != sha256:
        raise InputError(f"{dscs[0]} and {suite}'s Sources give {name} different sha256")
    return name, sha256


def cached_orig(url: str, name: str, sha256: str, cache: Cache, sink: LineSink) -> Path | None:
    """The orig tarball, checked against the sha256 its verified .dsc gives and kept where a
    run of `source.mirror` looks for it (by digest). None when the mirror lacks it."""
    path = cache.sources / "mirror" / f"{sha256[:16]}-{name}"
    with exclusive(cache.lock_path(f"source-{sha256[:16]}"), f"the source {name}", sink):
        if path.is_file() and sha256_file(path) == sha256:
            return path if exists(url) else None  # others fetch it from there
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.bump-{os.getpid()}")
        sink(f"downloading {url}")
        try:
            digest = download(url, partial)
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
