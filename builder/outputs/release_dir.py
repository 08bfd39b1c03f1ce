"""The release directory `release` writes (layout in builder/formats/release.py): filled in a
staging directory that OutputDir swaps into place, and recognised later as the tool's own (so a
new release may replace it, and nothing else)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from builder import __version__
from builder.errors import InputError
from builder.formats import sbom
from builder.formats.checksums import CHUNK, format_sha256sums, parse_sha256sums, sha256_bytes
from builder.formats.manifest import SIGNATURE_NAME, SUMS_NAME
from builder.formats.release import (
    ARTIFACT_NAME,
    MANIFESTS_DIR,
    PROVENANCE_BUNDLE,
    RECIPE_NAME,
    RELEASE_NAME,
    RELEASE_SCHEMA,
    Merged,
    Problem,
    ReleaseInput,
    manifest_path,
    parse_json_object,
    provenance_bundle,
    release_record,
    sbom_path,
)
from builder.host.attestation_keys import AttestationSigner
from builder.host.files import is_real_dir, write_new_file
from builder.outputs.release_inputs import (
    MAX_ARTIFACT_BYTES,
    MAX_RECORD_BYTES,
    MAX_SUMS_BYTES,
    hash_regular,
    open_regular,
    read_bounded,
)

MAX_RELEASE_FILES = 4096


def why_not_release(directory: Path) -> str | None:
    """None when `directory` is a complete release qga-builder wrote; otherwise the reason.
    Every file must be listed in SHA256SUMS and match it; nothing else may be there but
    SHA256SUMS.asc, when the release was signed."""
    try:
        record = parse_json_object(
            read_bounded(directory / RELEASE_NAME, MAX_RECORD_BYTES), RELEASE_NAME
        )
        sums = parse_sha256sums(read_bounded(directory / SUMS_NAME, MAX_SUMS_BYTES).decode())
    except (ValueError, UnicodeDecodeError):  # Problem is a ValueError
        return f"its {RELEASE_NAME} or {SUMS_NAME} is not one qga-builder wrote"
    if record.get("schema") != RELEASE_SCHEMA or not {RELEASE_NAME, PROVENANCE_BUNDLE} <= set(sums):
        return f"its {RELEASE_NAME} or {SUMS_NAME} is not one qga-builder wrote"
    found = _files(directory)
    if found != set(sums):
        strangers = sorted(found - set(sums)) or sorted(set(sums) - found)
        return f"its files and {SUMS_NAME} disagree ({', '.join(strangers[:5])})"
    for name in sorted(sums):
        if not _is_release_name(name):
            return f"its {SUMS_NAME} names {name!r}, which a release never holds"
        try:
            digest, _ = hash_regular(directory / name)
        except Problem as exc:
            return str(exc)
        if digest != sums[name]:
            return f"{name} differs from its {SUMS_NAME} line"
    return None


def _files(directory: Path) -> set[str]:
    """Every entry (and every entry of manifests/) but SHA256SUMS and its signature (a regular
    file), as SHA256SUMS names them."""
    found: set[str] = set()
    for name in os.listdir(directory):
        if name == MANIFESTS_DIR and is_real_dir(directory / name):
            found.update(f"{MANIFESTS_DIR}/{child}" for child in os.listdir(directory / name))
        elif name == SIGNATURE_NAME and stat.S_ISREG(os.lstat(directory / name).st_mode):
            continue  # a signed release's (a link or anything else there is a stranger)
        elif name != SUMS_NAME:
            found.add(name)
        if len(found) > MAX_RELEASE_FILES:
            break
    return found


def _is_release_name(name: str) -> bool:
    if name in (RELEASE_NAME, PROVENANCE_BUNDLE, sbom.SBOM_NAME):
        return True
    folder, slash, file = name.partition("/")
    if slash:
        return folder == MANIFESTS_DIR and RECIPE_NAME.match(file.removesuffix(".json")) is not None
    return ARTIFACT_NAME.match(name) is not None


def write_release(
    staging: Path,
    inputs: list[ReleaseInput],
    merged: Merged,
    signing: dict[str, str] | None = None,
    attester: AttestationSigner | None = None,
) -> dict[str, str]:
    """Fill `staging` with the release (release.json says who signs it, when someone does:
    `signing`); returns what its SHA256SUMS lists. With `attester`, the provenance bundle's
    lines are DSSE envelopes of the inputs' statements, signed by it (else the statements)."""
    digests: dict[str, str] = {}
    by_label = {each.label: each for each in inputs}
    for name, artifact in sorted(merged.artifacts.items()):
        source = by_label[merged.holders[name][0]]
        _copy_verified(source, name, staging / name, artifact.sha256)
        digests[name] = artifact.sha256
    (staging / MANIFESTS_DIR).mkdir(mode=0o755)
    for each in inputs:
        path = manifest_path(each.recipe)
        write_new_file(staging / path, each.manifest_bytes)
        digests[path] = sha256_bytes(each.manifest_bytes)
    sboms = {each.recipe: each.sbom for each in inputs if each.sbom is not None}
    for recipe, data in sboms.items():
        write_new_file(staging / sbom_path(recipe), data)
        digests[sbom_path(recipe)] = sha256_bytes(data)
    if sboms:  # one document for the release, referring to each recipe's by checksum
        data = sbom.encode(sbom.release_document("release", __version__, _latest(sboms), sboms))
        write_new_file(staging / sbom.SBOM_NAME, data)
        digests[sbom.SBOM_NAME] = sha256_bytes(data)
    record = json.dumps(release_record(inputs, merged, signing), indent=2).encode() + b"\n"
    bundle = provenance_bundle(inputs)
    if attester is not None:
        bundle = b"".join(attester.sign(line).line() for line in bundle.splitlines())
    for name, data in ((PROVENANCE_BUNDLE, bundle), (RELEASE_NAME, record)):
        write_new_file(staging / name, data)
        digests[name] = sha256_bytes(data)
    write_new_file(staging / SUMS_NAME, format_sha256sums(digests).encode())
    return digests


def _latest(sboms: dict[str, bytes]) -> int:
    """The release document's time: the newest of its inputs' (each their SOURCE_DATE_EPOCH),
    so the same inputs make the same bytes."""
    times = []
    for data in sboms.values():
        created = json.loads(data).get("creationInfo", {}).get("created", "")
        try:
            times.append(
                int(
                    datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
                )
            )
        except ValueError:
            continue
    return max(times, default=0)


def _copy_verified(source: ReleaseInput, name: str, target: Path, expected: str) -> None:
    """Copy one artifact, hashing the bytes as they are written: what lands in the release is
    exactly what was checked, even if the input changes between the check and the copy."""
    try:
        fd = open_regular(source.directory / name)
    except Problem as exc:
        raise InputError(f"release input {source.label}: {exc}") from None
    with os.fdopen(fd, "rb") as reader:
        executable = os.fstat(reader.fileno()).st_mode & 0o111
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        digest, size = hashlib.sha256(), 0
        with os.fdopen(os.open(target, flags, 0o755 if executable else 0o644), "wb") as writer:
            while chunk := reader.read(CHUNK):
                size += len(chunk)
                if size > MAX_ARTIFACT_BYTES:
                    break
                digest.update(chunk)
                writer.write(chunk)
    if digest.hexdigest() != expected or size > MAX_ARTIFACT_BYTES:
        raise InputError(
            f"release input {source.label}: {name} changed while it was being copied",
            hint="another process is writing the input directory; run `release` again when "
            "nothing writes it",
        )
