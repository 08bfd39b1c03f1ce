"""Stage: the output directory. A run builds into a hidden staging directory beside the final
one and swaps it into place at the very end, so a failed or interrupted run leaves nothing that
looks like a result, and a crash never leaves the name empty.

The tool replaces only what it can prove it wrote: an existing output directory must hold a
manifest of ours, a SHA256SUMS whose every line matches its file, and nothing else but our logs
and provenance, and SHA256SUMS.asc when it was signed (or be a release of ours:
outputs/release_dir.py). A signed output's SHA256SUMS lists its records and logs too
(formats/signed_sums.py). Anything else (a user's
directory, `.`, a checkout, a link) is refused (exit 9).
A lock file keeps two runs from writing the same output directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from builder.errors import OutputError
from builder.formats.checksums import parse_sha256sums, sha256_file
from builder.formats.manifest import (
    LOGS_DIR,
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    SIGNATURE_NAME,
    SUMS_NAME,
)
from builder.formats.provenance import PROVENANCE_NAME
from builder.formats.release import RELEASE_NAME
from builder.formats.sbom import SBOM_NAME
from builder.formats.signed_sums import (
    ATTESTATION_NAME,
    LOG_NAME,
    artifact_lines,
    is_record,
    listed_logs,
)
from builder.host.files import (
    is_real_dir,
    open_lock_file,
    rename_exchange,
    rename_no_replace,
    write_new_file,
)
from builder.outputs.release_dir import why_not_release

STAGING_MARKER = ".qga-builder-staging"  # inside a staging dir, holds its run id
MAX_MANIFEST_BYTES = 64 << 20
_RUN_ID = r"[a-z0-9]{4,40}"


def staging_pattern(final_name: str) -> re.Pattern[str]:
    """`.NAME.tmp-RUNID` (a run's staging) and `.NAME.old-RUNID` (a replaced release)."""
    return re.compile(rf"^\.{re.escape(final_name)}\.(?P<kind>tmp|old)-(?P<run>{_RUN_ID})$")


def why_not_ours(directory: Path) -> str | None:
    """None when `directory` is a complete output qga-builder wrote; otherwise the reason."""
    try:
        mode = os.lstat(directory).st_mode
    except FileNotFoundError:
        return "it does not exist"
    if stat.S_ISLNK(mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(mode):
        return "it is not a directory"
    entries = set(os.listdir(directory))
    if RELEASE_NAME in entries:  # a release `release` merged: its own rules
        return why_not_release(directory)
    manifest = _read_manifest(directory / MANIFEST_NAME)
    if manifest is None:
        return f"it has no {MANIFEST_NAME} written by qga-builder"
    try:
        if not _is_file(directory / SUMS_NAME):
            return f"it has no {SUMS_NAME}"
        sums = parse_sha256sums((directory / SUMS_NAME).read_text())
    except (ValueError, OSError, UnicodeDecodeError):
        return f"its {SUMS_NAME} is not one qga-builder wrote"
    listed = {artifact.get("name") for artifact in manifest.get("artifacts", [])}
    artifacts = artifact_lines(sums)
    if listed != set(artifacts):
        return f"its {MANIFEST_NAME} and {SUMS_NAME} name different files"
    for name in sorted(sums):
        path = directory / name
        plain = "/" not in name or (is_record(name) and is_real_dir(directory / LOGS_DIR))
        if not plain or not _is_file(path) or sha256_file(path) != sums[name]:
            return f"{name} is missing or differs from its {SUMS_NAME} line"
    extra = entries - set(artifacts) - {SUMS_NAME, MANIFEST_NAME, PROVENANCE_NAME, LOGS_DIR}
    if SBOM_NAME in entries and _is_file(directory / SBOM_NAME):
        extra.discard(SBOM_NAME)
    if ATTESTATION_NAME in entries and _is_file(directory / ATTESTATION_NAME):
        extra.discard(ATTESTATION_NAME)  # signed provenance (its signature is cosign's to check)
    if SIGNATURE_NAME in entries and _is_file(directory / SIGNATURE_NAME):
        extra.discard(SIGNATURE_NAME)  # a signed output's (its contents are gpg's to check)
    if extra:
        shown = ", ".join(sorted(extra)[:5])
        return f"it holds files qga-builder did not write ({shown})"
    return _why_not_our_logs(directory, sums) if LOGS_DIR in entries else None


def _why_not_our_logs(directory: Path, sums: dict[str, str]) -> str | None:
    """logs/ holds step logs only; when SHA256SUMS lists any of them (a signed output), all."""
    logs = directory / LOGS_DIR
    if not is_real_dir(logs):
        return f"its {LOGS_DIR}/ holds files qga-builder did not write"
    names = os.listdir(logs)
    if any(not LOG_NAME.match(name) or not _is_file(logs / name) for name in names):
        return f"its {LOGS_DIR}/ holds files qga-builder did not write"
    listed = listed_logs(sums)
    if listed and listed != set(names):
        return f"its {LOGS_DIR}/ and {SUMS_NAME} name different step logs"
    return None


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _read_manifest(path: Path) -> dict | None:
    try:
        if not _is_file(path) or path.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(value, dict) or value.get("schema") != MANIFEST_SCHEMA:
        return None
    return value


def _is_empty_dir(path: Path) -> bool:
    return is_real_dir(path) and not os.listdir(path)


def check_replaceable(final: Path) -> None:
    """Refuse (exit 9) an existing output directory that the tool cannot prove it wrote."""
    final = normalized(final)
    if not os.path.lexists(final) or _is_empty_dir(final):
        return
    reason = why_not_ours(final)
    if reason is not None:
        raise OutputError(
            f"output directory {final} was not written by qga-builder ({reason}); "
            "refusing to replace it",
            hint="choose a new directory with --output DIR; qga-builder replaces only its own "
            "complete outputs (move this one away yourself if it should go)",
        )


def normalized(path: Path) -> Path:
    final = Path(os.path.normpath(path.absolute()))
    if final.name in ("", ".", "..") or final == final.parent:
        raise OutputError(
            f"output directory {path}: the file system root cannot be an output directory",
            hint="choose a new directory with --output DIR",
        )
    return final


def holds_own_marker(directory: Path, run_id: str | None = None) -> bool:
    """Does this staging directory carry the marker the tool wrote when it made it?"""
    marker = directory / STAGING_MARKER
    if not _is_file(marker):
        return False
    try:
        written = marker.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return run_id is None or written == run_id


class OutputLock:
    """The lock of one output name (`.NAME.lock` beside it): one writer at a time."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = lock_path(final)
        self.fd: int | None = None

    def acquire(self) -> None:
        self.fd = open_lock_file(self.path)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip()
            self.release()
            raise OutputError(
                f"output directory {self.final} is being written by another run"
                + (f" (pid {holder})" if holder else ""),
                hint="wait for it to finish, or pass another --output DIR",
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class OutputDir:
    """Context manager: lock, stage in `.NAME.tmp-RUN/`, `publish()` swaps it in as NAME/."""

    def __init__(self, final: Path, run_id: str, log: Callable[[str], None] | None = None) -> None:
        self.final = normalized(final)
        self.parent = self.final.parent
        self.run_id = run_id
        self.staging = self.parent / f".{self.final.name}.tmp-{run_id}"
        self._lock = OutputLock(self.final)
        self._log = log or (lambda line: None)
        self.published = False

    def __enter__(self) -> OutputDir:
        check_replaceable(self.final)  # before anything is created beside it
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"output directory {self.final}: cannot write to {self.parent}: {exc.strerror}",
                hint="choose another place with --output DIR",
            ) from None
        self._lock.acquire()
        try:
            for line in recover(self.final):
                self._log(line)
            check_replaceable(self.final)  # again, now that nobody else can write it
            self.staging.mkdir(mode=0o755)
            write_new_file(self.staging / STAGING_MARKER, f"{self.run_id}\n".encode())
        except OSError as exc:
            self._release()
            raise OutputError(f"cannot create {self.staging}: {exc.strerror}") from None
        except BaseException:
            self._release()
            raise
        return self

    def publish(self) -> None:
        """Put the staged directory in place as NAME/; the previous release, if any, is
        deleted only after the new one is in place (an atomic exchange of the two)."""
        check_replaceable(self.final)
        (self.staging / STAGING_MARKER).unlink()
        if not os.path.lexists(self.final):
            rename_no_replace(self.staging, self.final)
        elif rename_exchange(self.staging, self.final):
            # The staging name now holds the previous release: proven ours just above.
            _remove_previous(self.staging)
        else:
            # No atomic exchange on this file system: old aside, new in, old removed. A crash
            # between the two renames is repaired by `recover` (the next run, or `clean`).
            old = self.parent / f".{self.final.name}.old-{self.run_id}"
            os.rename(self.final, old)
            os.rename(self.staging, self.final)
            _remove_previous(old)
        self.published = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.published and holds_own_marker(self.staging, self.run_id):
            shutil.rmtree(self.staging, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        self._lock.release()


def lock_path(final: Path) -> Path:
    return final.parent / f".{final.name}.lock"


def _remove_previous(directory: Path) -> None:
    if _is_empty_dir(directory):
        os.rmdir(directory)  # an empty directory the user made: rmdir cannot lose anything
    else:
        shutil.rmtree(directory, ignore_errors=True)


def leftovers(final: Path) -> list[Path]:
    """Staging and replaced directories of `final` by the tool's exact naming (newest first)."""
    if not is_real_dir(final.parent):
        return []
    pattern = staging_pattern(final.name)
    found = [
        final.parent / name
        for name in os.listdir(final.parent)
        if pattern.match(name) and is_real_dir(final.parent / name)
    ]
    # A staged new release completes a publish before an old one is restored.
    return sorted(found, key=lambda p: (".tmp-" not in p.name, -os.lstat(p).st_mtime))


def recover(final: Path, *, dry_run: bool = False) -> list[str]:
    """Repair what a crashed run left beside `final`; the caller holds its lock.

    A complete release (proven ours) is moved back into place when the name is empty; other
    leftovers are deleted only when they carry the tool's staging marker or are complete
    releases; anything else is left alone and reported.
    """
    said: list[str] = []
    final_present = os.path.lexists(final)
    prefix = "would " if dry_run else ""
    for directory in leftovers(final):
        complete = why_not_ours(directory) is None
        if complete and not final_present:
            if not dry_run:
                rename_no_replace(directory, final)
            final_present = True
            said.append(f"{prefix}restore {final} from {directory.name} (an interrupted publish)")
        elif complete or holds_own_marker(directory):
            if not dry_run:
                shutil.rmtree(directory, ignore_errors=True)
            said.append(f"{prefix}remove {directory} (left by an interrupted run)")
        else:
            said.append(f"leave {directory} alone: it does not look like the tool's own")
    return said


def all_leftovers(parent: Path) -> list[tuple[Path, Path]]:
    """(leftover, its final path) for every output under `parent` (for `clean`)."""
    if not is_real_dir(parent):
        return []
    pattern = re.compile(rf"^\.(?P<final>.+)\.(?:tmp|old)-{_RUN_ID}$")
    result = []
    for name in sorted(os.listdir(parent)):
        match = pattern.match(name)
        if match and is_real_dir(parent / name):
            result.append((parent / name, parent / match["final"]))
    return result
