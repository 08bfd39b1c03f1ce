"""Read and check one input of `release`: a run's output directory, often made on another
machine and handed over by CI. It is untrusted: every file is opened without following links,
must be a regular file, and is read within a bound; every record must agree with the files.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from pathlib import Path

from builder.errors import InputError
from builder.formats.checksums import CHUNK, parse_sha256sums
from builder.formats.manifest import LOGS_DIR, MANIFEST_NAME, SUMS_NAME
from builder.formats.provenance import PROVENANCE_NAME
from builder.formats.release import (
    RELEASE_NAME,
    InputArtifact,
    Problem,
    ReleaseInput,
    check_statement,
    check_sums_agree,
    manifest_artifacts,
    parse_json_object,
    recipe_name,
)

MAX_RECORD_BYTES = 16 << 20  # manifest.json, provenance.intoto.json
MAX_SUMS_BYTES = 1 << 20
MAX_ARTIFACT_BYTES = 1 << 30
MAX_LOGS = 100
LOG_NAME = re.compile(r"^[0-9]{2}-[a-z0-9-]{1,64}\.log$")  # as output_dir writes them
RECORDS = frozenset({SUMS_NAME, MANIFEST_NAME, PROVENANCE_NAME, LOGS_DIR})
INPUT_HINT = (
    "a release input must be an output directory of `qga-builder run`, exactly as it was "
    "written; rebuild that recipe (or download its CI artifact again)"
)


def open_regular(path: Path) -> int:
    """A descriptor on a regular file; a link, a directory, a FIFO or a device is a Problem."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Problem(f"{path.name} is missing") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Problem(f"{path.name} is a symbolic link") from None
        raise Problem(f"cannot read {path.name}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Problem(f"{path.name} is not a regular file")
    return fd


def read_bounded(path: Path, limit: int) -> bytes:
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise Problem(f"{path.name} is larger than {limit} bytes")
    return data


def hash_regular(path: Path, limit: int | None = None) -> tuple[str, int]:
    """(sha256, size) of a regular file, read through a descriptor opened without links."""
    limit = MAX_ARTIFACT_BYTES if limit is None else limit
    digest, size = hashlib.sha256(), 0
    with os.fdopen(open_regular(path), "rb") as handle:
        while chunk := handle.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise Problem(f"{path.name} is larger than {limit} bytes")
            digest.update(chunk)
    return digest.hexdigest(), size


def read_input(directory: Path) -> ReleaseInput:
    """The checked input, or InputError (exit 3) naming the directory and the file."""
    try:
        return _read(directory)
    except Problem as exc:
        raise InputError(f"release input {directory}: {exc}", hint=INPUT_HINT) from None


def _read(directory: Path) -> ReleaseInput:
    try:
        mode = os.lstat(directory).st_mode
    except FileNotFoundError:
        raise Problem("it does not exist") from None
    if stat.S_ISLNK(mode):
        raise Problem("it is a symbolic link (name the directory itself)")
    if not stat.S_ISDIR(mode):
        raise Problem("it is not a directory")
    entries = set(os.listdir(directory))
    if RELEASE_NAME in entries:
        raise Problem("it is a release directory (made by `release`), not a run's output")
    if MANIFEST_NAME not in entries:
        raise Problem(f"it has no {MANIFEST_NAME}: not an output directory of `qga-builder run`")
    manifest_bytes = read_bounded(directory / MANIFEST_NAME, MAX_RECORD_BYTES)
    manifest = parse_json_object(manifest_bytes, MANIFEST_NAME)
    recipe = recipe_name(manifest)
    artifacts = manifest_artifacts(manifest)
    try:
        sums = parse_sha256sums(read_bounded(directory / SUMS_NAME, MAX_SUMS_BYTES).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(f"{SUMS_NAME} is not a checksum file qga-builder wrote ({exc})") from None
    check_sums_agree(artifacts, sums)
    extra = sorted(entries - {artifact.name for artifact in artifacts} - RECORDS)
    if extra:
        raise Problem(f"it holds files qga-builder did not write: {', '.join(extra[:5])}")
    if LOGS_DIR in entries:
        _check_logs(directory / LOGS_DIR)
    for artifact in artifacts:
        _check_artifact(directory, artifact, sums[artifact.name])
    statement = parse_json_object(
        read_bounded(directory / PROVENANCE_NAME, MAX_RECORD_BYTES), PROVENANCE_NAME
    )
    check_statement(statement, artifacts)
    return ReleaseInput(
        directory=directory,
        label=str(directory),
        recipe=recipe,
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        statement=statement,
        artifacts=artifacts,
    )


def _check_artifact(directory: Path, artifact: InputArtifact, listed: str) -> None:
    digest, size = hash_regular(directory / artifact.name)
    if digest != listed:
        raise Problem(
            f"{artifact.name} does not match its {SUMS_NAME} line (listed {listed}, file "
            f"{digest}): it was changed after the build"
        )
    if size != artifact.size:
        raise Problem(f"{artifact.name} is {size} bytes; {MANIFEST_NAME} says {artifact.size}")


def _check_logs(logs: Path) -> None:
    if not stat.S_ISDIR(os.lstat(logs).st_mode):
        raise Problem(f"{LOGS_DIR} is not a directory")
    names = sorted(os.listdir(logs))
    if len(names) > MAX_LOGS:
        raise Problem(f"{LOGS_DIR}/ holds more than {MAX_LOGS} files")
    for name in names:
        if not LOG_NAME.match(name) or not stat.S_ISREG(os.lstat(logs / name).st_mode):
            raise Problem(f"{LOGS_DIR}/{name} is not a step log qga-builder wrote")
