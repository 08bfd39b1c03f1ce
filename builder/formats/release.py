"""A release directory: the outputs of several runs (one per recipe, often built on separate CI
machines) merged into one, and the checks that each run's records agree with its files.

Layout of a release directory:

    <artifact>...                 every artifact of every input (one copy of a shared file)
    manifests/<recipe>.json       each input's manifest.json, as it was
    provenance.intoto.jsonl       each input's in-toto statement, one per line (JSON Lines)
    release.json                  the inputs: recipes (series, target, architecture), cache
                                  keys, source digests, artifacts; the signing key's fingerprint
    SHA256SUMS                    every file above (`sha256sum -c SHA256SUMS` checks them all)
    SHA256SUMS.asc                when signed: an armored detached OpenPGP signature of SHA256SUMS

Everything here is pure: records in (already read, bounded), records or a `Problem` out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder import __version__
from builder.formats.manifest import LOGS_DIR, MANIFEST_NAME, MANIFEST_SCHEMA, SUMS_NAME
from builder.formats.provenance import PREDICATE_TYPE, PROVENANCE_NAME, STATEMENT_TYPE
from builder.formats.sbom import SBOM_NAME

RELEASE_NAME = "release.json"
RELEASE_SCHEMA = "https://qga-builder.invalid/release/v1"
MANIFESTS_DIR = "manifests"
PROVENANCE_BUNDLE = "provenance.intoto.jsonl"
# Names an artifact can never take: the records of a run's output or of a release.
RESERVED = frozenset(
    {
        SUMS_NAME,
        MANIFEST_NAME,
        PROVENANCE_NAME,
        LOGS_DIR,
        RELEASE_NAME,
        MANIFESTS_DIR,
        PROVENANCE_BUNDLE,
        SBOM_NAME,
    }
)
# The recipe's own patterns (config/recipe.py): an artifact's file name, a recipe's name.
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9._+-]{0,127}$")
RECIPE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_ARTIFACTS = 256  # per input


class Problem(ValueError):
    """What is wrong with one input, said without its directory (the caller adds it)."""


@dataclass(frozen=True)
class InputArtifact:
    name: str
    sha256: str
    size: int
    kind: str


@dataclass(frozen=True)
class ReleaseInput:
    """One run's output directory, checked: its records and what they say."""

    directory: Path
    label: str  # the directory as the user named it, for messages
    recipe: str
    manifest: dict[str, Any]
    manifest_bytes: bytes
    statement: dict[str, Any]
    artifacts: tuple[InputArtifact, ...]
    sbom: bytes | None = None  # its sbom.spdx.json, checked against the manifest's record


@dataclass
class Merged:
    """name -> the artifact, and the labels of every input that holds it (same bytes)."""

    artifacts: dict[str, InputArtifact] = field(default_factory=dict)
    holders: dict[str, list[str]] = field(default_factory=dict)


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Problem(f"{what} is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise Problem(f"{what} is not a JSON object")
    return value


def recipe_name(manifest: dict[str, Any]) -> str:
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise Problem(f"{MANIFEST_NAME} is not one qga-builder wrote (no schema {MANIFEST_SCHEMA})")
    recipe = manifest.get("recipe")
    name = recipe.get("name") if isinstance(recipe, dict) else None
    if not isinstance(name, str) or not RECIPE_NAME.match(name):
        raise Problem(f"{MANIFEST_NAME}: recipe.name is missing or not a recipe name")
    return name


def manifest_artifacts(manifest: dict[str, Any]) -> tuple[InputArtifact, ...]:
    """The manifest's artifact list, each entry checked (name, sha256, size)."""
    listed = manifest.get("artifacts")
    if not isinstance(listed, list) or not listed or len(listed) > MAX_ARTIFACTS:
        raise Problem(f"{MANIFEST_NAME}: artifacts must be a list of 1 to {MAX_ARTIFACTS} entries")
    result: dict[str, InputArtifact] = {}
    for number, entry in enumerate(listed):
        where = f"{MANIFEST_NAME}: artifacts[{number}]"
        if not isinstance(entry, dict):
            raise Problem(f"{where} is not an object")
        name, digest, size = entry.get("name"), entry.get("sha256"), entry.get("size")
        if not isinstance(name, str) or not ARTIFACT_NAME.match(name) or name in RESERVED:
            raise Problem(f"{where}: {name!r} is not a file name an artifact can have")
        if name in result:
            raise Problem(f"{where}: {name} is listed twice")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise Problem(f"{where} ({name}): sha256 is not 64 lower-case hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise Problem(f"{where} ({name}): size is not a byte count")
        kind = entry.get("kind")
        result[name] = InputArtifact(name, digest, size, kind if isinstance(kind, str) else "")
    return tuple(result.values())


def check_sums_agree(artifacts: tuple[InputArtifact, ...], sums: dict[str, str]) -> None:
    """The manifest and SHA256SUMS name the same files with the same digests."""
    listed = {artifact.name: artifact.sha256 for artifact in artifacts}
    differences = [
        f"only in {where}: {', '.join(sorted(names))}"
        for where, names in (
            (MANIFEST_NAME, set(listed) - set(sums)),
            (SUMS_NAME, set(sums) - set(listed)),
        )
        if names
    ]
    if differences:
        raise Problem(
            f"{MANIFEST_NAME} and {SUMS_NAME} name different files ({'; '.join(differences)})"
        )
    for name in sorted(listed):
        if listed[name] != sums[name]:
            raise Problem(f"{MANIFEST_NAME} and {SUMS_NAME} give {name} different sha256")


def check_statement(statement: dict[str, Any], artifacts: tuple[InputArtifact, ...]) -> None:
    """An in-toto statement of ours whose subjects are exactly the artifacts."""
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != (
        PREDICATE_TYPE
    ):
        raise Problem(f"{PROVENANCE_NAME} is not an in-toto statement with SLSA provenance")
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        raise Problem(f"{PROVENANCE_NAME}: subject is not a list")
    named: dict[str, Any] = {}
    for subject in subjects:
        if not isinstance(subject, dict) or not isinstance(subject.get("name"), str):
            raise Problem(f"{PROVENANCE_NAME}: a subject has no name")
        digest = subject.get("digest")
        named[subject["name"]] = digest.get("sha256") if isinstance(digest, dict) else None
    expected = {artifact.name: artifact.sha256 for artifact in artifacts}
    if len(named) != len(subjects) or named != expected:
        differing = sorted(
            name for name in set(named) | set(expected) if named.get(name) != expected.get(name)
        )
        raise Problem(
            f"{PROVENANCE_NAME}: its subjects do not match the artifacts "
            f"({', '.join(differing) or 'a subject is listed twice'})"
        )


def merge(inputs: list[ReleaseInput]) -> Merged:
    """All artifacts under one name space. The same name with the same bytes in several inputs
    (service files several Linux recipes share) is one file; different bytes are a conflict."""
    recipes: dict[str, str] = {}
    merged = Merged()
    for each in inputs:
        if each.recipe in recipes:
            raise Problem(
                f"{recipes[each.recipe]} and {each.label} are both outputs of recipe "
                f"{each.recipe}; a release holds each recipe once"
            )
        recipes[each.recipe] = each.label
        for artifact in each.artifacts:
            known = merged.artifacts.get(artifact.name)
            if known is None:
                merged.artifacts[artifact.name] = artifact
                merged.holders[artifact.name] = [each.label]
            elif known.sha256 == artifact.sha256:
                merged.holders[artifact.name].append(each.label)
            else:
                first = merged.holders[artifact.name][0]
                raise Problem(
                    f"{first} and {each.label} both hold {artifact.name} with different "
                    f"content (sha256 {known.sha256[:16]}... and {artifact.sha256[:16]}...)"
                )
    return merged


def manifest_path(recipe: str) -> str:
    return f"{MANIFESTS_DIR}/{recipe}.json"


def sbom_path(recipe: str) -> str:
    """Where a release keeps a recipe's own SBOM (beside its manifest)."""
    return f"{MANIFESTS_DIR}/{recipe}.spdx.json"


def provenance_bundle(inputs: list[ReleaseInput]) -> bytes:
    """JSON Lines: one statement per line, in the order of the recipes' names. ASCII only, so
    no character of a statement (U+2028, say) reads as a line break to any reader."""
    ordered = sorted(inputs, key=lambda each: each.recipe)
    return b"".join(
        json.dumps(each.statement, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
        for each in ordered
    )


def _text(value: object) -> str | None:
    """A short string from an input's record, or None: release.json repeats no other value."""
    return value if isinstance(value, str) and len(value) <= 256 else None


def _record(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    """One section of an input's manifest; {} when it is missing or not an object."""
    value = manifest.get(key)
    return value if isinstance(value, dict) else {}


def release_record(
    inputs: list[ReleaseInput], merged: Merged, signing: dict[str, str] | None = None
) -> dict[str, Any]:
    """release.json: what went into the release, and who signs its SHA256SUMS (`signing`: the
    key's public fingerprint); no time or host path, so the same inputs give the same bytes."""
    recipes = []
    for each in sorted(inputs, key=lambda item: item.recipe):
        manifest = each.manifest
        source, tool, series = (_record(manifest, key) for key in ("source", "tool", "series"))
        recipes.append(
            {
                "name": each.recipe,
                "recipe_sha256": _text(manifest["recipe"].get("sha256")),
                "cache_key": _text(manifest.get("cache_key")),
                "qemu_version": _text(manifest.get("qemu_version")),
                "series": _text(series.get("series")),
                "target": _text(manifest.get("target")),
                "architecture": _text(manifest.get("architecture")),
                "source": {
                    key: source[key]
                    for key in ("kind", "package", "version", "url", "tag", "commit", "sha256")
                    if _text(source.get(key)) is not None
                },
                "built_by": _text(tool.get("version")),
                "manifest": manifest_path(each.recipe),
                "artifacts": [artifact.name for artifact in each.artifacts],
            }
        )
    label_to_recipe = {each.label: each.recipe for each in inputs}
    record: dict[str, Any] = {
        "schema": RELEASE_SCHEMA,
        "tool": {"name": "qga-builder", "version": __version__},
        "recipes": recipes,
        "artifacts": [
            {
                "name": name,
                "sha256": artifact.sha256,
                "size": artifact.size,
                "kind": artifact.kind,
                "recipes": sorted(label_to_recipe[label] for label in merged.holders[name]),
            }
            for name, artifact in sorted(merged.artifacts.items())
        ],
        "provenance": PROVENANCE_BUNDLE,
    }
    if signing is not None:
        record["signing"] = signing
    return record
