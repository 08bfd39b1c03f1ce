"""Read and check one input of `release`: a run's output directory, often made on another
machine and handed over by CI. It is untrusted: every file is opened without following links,
must be a regular file, and is read within a bound; every record must agree with the files.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from builder.errors import InputError
from builder.formats.checksums import CHUNK, parse_sha256sums, sha256_bytes
from builder.formats.manifest import LOGS_DIR, MANIFEST_NAME, SIGNATURE_NAME, SUMS_NAME
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
from builder.formats.sbom import SBOM_NAME
from builder.formats.signed_sums import (
    ATTESTATION_NAME,
    LOG_NAME,
    RECORD_FILES,
    artifact_lines,
    listed_logs,
    record_lines,
)
from builder.host.openpgp import PublicKey
from builder.outputs.signed_dir import open_directory, read_signed_sums

MAX_RECORD_BYTES = 16 << 20  # manifest.json, provenance.intoto.json
MAX_SUMS_BYTES = 1 << 20
MAX_ARTIFACT_BYTES = 1 << 30
MAX_LOGS = 100
# A signed input's SHA256SUMS.asc is taken as it is unless `--input-public-key` asks for it to
# be checked: the release's own SHA256SUMS is signed anew (or not at all).
RECORDS = frozenset(
    {
        SUMS_NAME,
        MANIFEST_NAME,
        PROVENANCE_NAME,
        LOGS_DIR,
        SIGNATURE_NAME,
        ATTESTATION_NAME,
        SBOM_NAME,
    }
)
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


def read_input(directory: Path, key: PublicKey | None = None) -> ReleaseInput:
    """The checked input, or InputError (exit 3) naming the directory and the file. With a
    key, its SHA256SUMS must first be signed by it (SHA256SUMS.asc: exit 16 missing, 17 bad)."""
    try:
        return _read(directory, key)
    except Problem as exc:
        raise InputError(f"release input {directory}: {exc}", hint=INPUT_HINT) from None


def _sums_bytes(directory: Path, key: PublicKey | None) -> bytes:
    if key is None:
        return read_bounded(directory / SUMS_NAME, MAX_SUMS_BYTES)
    label = f"release input {directory}"
    root = open_directory(directory, label)
    try:
        return read_signed_sums(root, key, label)
    finally:
        os.close(root)


def _read(directory: Path, key: PublicKey | None = None) -> ReleaseInput:
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
        listed = parse_sha256sums(_sums_bytes(directory, key).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(f"{SUMS_NAME} is not a checksum file qga-builder wrote ({exc})") from None
    sums = artifact_lines(listed)
    check_sums_agree(artifacts, sums)
    extra = sorted(entries - {artifact.name for artifact in artifacts} - RECORDS)
    if extra:
        raise Problem(f"it holds files qga-builder did not write: {', '.join(extra[:5])}")
    if SIGNATURE_NAME in entries and not stat.S_ISREG(os.lstat(directory / SIGNATURE_NAME).st_mode):
        raise Problem(f"{SIGNATURE_NAME} is not a regular file")
    logs = _check_logs(directory / LOGS_DIR) if LOGS_DIR in entries else []
    for artifact in artifacts:
        _check_artifact(directory, artifact, sums[artifact.name])
    provenance_bytes = read_bounded(directory / PROVENANCE_NAME, MAX_RECORD_BYTES)
    statement = parse_json_object(provenance_bytes, PROVENANCE_NAME)
    check_statement(statement, artifacts)
    records = {MANIFEST_NAME: manifest_bytes, PROVENANCE_NAME: provenance_bytes}
    _check_records(directory, record_lines(listed), records, logs)
    sbom = _read_sbom(directory, entries, manifest, record_lines(listed))
    return ReleaseInput(
        directory=directory,
        label=str(directory),
        recipe=recipe,
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        statement=statement,
        artifacts=artifacts,
        sbom=sbom,
    )


def _read_sbom(
    directory: Path, entries: set[str], manifest: dict[str, Any], listed: dict[str, str]
) -> bytes | None:
    """The run's sbom.spdx.json, when it has one: the sha256 its manifest records (and its
    signed SHA256SUMS line, when signed)."""
    record = manifest.get("sbom")
    if SBOM_NAME not in entries:
        if record is not None:
            raise Problem(f"{MANIFEST_NAME} names {SBOM_NAME}, which is missing")
        return None
    data = read_bounded(directory / SBOM_NAME, MAX_RECORD_BYTES)
    digest = sha256_bytes(data)
    if not isinstance(record, dict) or record.get("sha256") != digest:
        raise Problem(f"{SBOM_NAME} is not the one {MANIFEST_NAME} records: it was changed")
    if listed and listed.get(SBOM_NAME) != digest:
        raise Problem(f"{SBOM_NAME} does not match its {SUMS_NAME} line: it was changed")
    return data


def _check_artifact(directory: Path, artifact: InputArtifact, listed: str) -> None:
    digest, size = hash_regular(directory / artifact.name)
    if digest != listed:
        raise Problem(
            f"{artifact.name} does not match its {SUMS_NAME} line (listed {listed}, file "
            f"{digest}): it was changed after the build"
        )
    if size != artifact.size:
        raise Problem(f"{artifact.name} is {size} bytes; {MANIFEST_NAME} says {artifact.size}")


def _check_records(
    directory: Path, listed: dict[str, str], records: dict[str, bytes], logs: list[str]
) -> None:
    """A signed run lists its records and step logs in SHA256SUMS too: each must match (the
    manifest and provenance as they were read above), and every step log must be listed."""
    if not listed:
        return  # an unsigned run's SHA256SUMS lists its artifacts only
    for name in RECORD_FILES:
        if name not in listed:
            raise Problem(f"{SUMS_NAME} lists step logs or records but not {name}")
        if sha256_bytes(records[name]) != listed[name]:
            raise Problem(f"{name} does not match its {SUMS_NAME} line: it was changed")
    # The run's signed provenance (not carried into the release, which signs its own): when
    # there, listed and unchanged like the other records.
    envelope = directory / ATTESTATION_NAME
    if os.path.lexists(envelope) != (ATTESTATION_NAME in listed):
        raise Problem(f"{ATTESTATION_NAME} and its {SUMS_NAME} line: one without the other")
    if ATTESTATION_NAME in listed and hash_regular(envelope)[0] != listed[ATTESTATION_NAME]:
        raise Problem(f"{ATTESTATION_NAME} does not match its {SUMS_NAME} line: it was changed")
    unlisted = sorted(set(logs) - listed_logs(listed))
    if unlisted:
        raise Problem(f"{LOGS_DIR}/{unlisted[0]} is not listed in its {SUMS_NAME}")
    for name in sorted(listed_logs(listed)):
        if name not in logs:
            raise Problem(f"{LOGS_DIR}/{name} is listed in its {SUMS_NAME} but missing")
        digest, _ = hash_regular(directory / LOGS_DIR / name)
        if digest != listed[f"{LOGS_DIR}/{name}"]:
            raise Problem(f"{LOGS_DIR}/{name} does not match its {SUMS_NAME} line")


def _check_logs(logs: Path) -> list[str]:
    if not stat.S_ISDIR(os.lstat(logs).st_mode):
        raise Problem(f"{LOGS_DIR} is not a directory")
    names = sorted(os.listdir(logs))
    if len(names) > MAX_LOGS:
        raise Problem(f"{LOGS_DIR}/ holds more than {MAX_LOGS} files")
    for name in names:
        if not LOG_NAME.match(name) or not stat.S_ISREG(os.lstat(logs / name).st_mode):
            raise Problem(f"{LOGS_DIR}/{name} is not a step log qga-builder wrote")
    return names
