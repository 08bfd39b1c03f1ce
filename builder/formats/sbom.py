"""SPDX 2.3 JSON documents (`sbom.spdx.json`): what an output is made of.

A run's document describes its agent (and, for Windows, the MSI and every DLL it bundles) and
what went into it: QEMU's source with its digest, our patches with theirs, and each library
the link really used (from the link map, `formats.link_map`) with the Debian source package it
was built from (purl `pkg:deb/debian/glib2.0@VERSION?arch=source&distro=debian-13`) and the
binary package that supplied the file; a DLL cross-built from a pinned orig tarball names the
source package, the tarball and its sha256. A release's document refers to each input's by
checksum.

Deterministic: the same inputs give the same bytes (created = SOURCE_DATE_EPOCH, namespace
derived from the digests, everything sorted), so the document can be compared across builds.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

SBOM_NAME = "sbom.spdx.json"
NAMESPACE_ROOT = "https://qga-builder.invalid/spdx"  # .invalid: a name, never fetched
DISTRO_OF_SUITE = {"bullseye": "debian-11", "bookworm": "debian-12", "trixie": "debian-13"}


@dataclass(frozen=True)
class Built:
    """A file of the output the document describes (the agent, an MSI, a bundled DLL)."""

    name: str
    sha256: str
    purpose: str = "APPLICATION"  # SPDX primaryPackagePurpose


@dataclass(frozen=True)
class DebianLibrary:
    """Files of one Debian binary package that went into a built file."""

    source: str  # glib2.0
    source_version: str
    package: str  # libglib2.0-dev
    version: str
    architecture: str
    files: tuple[str, ...]  # /usr/lib/x86_64-linux-gnu/libglib-2.0.a
    into: str  # the Built name it went into
    relationship: str = "STATIC_LINK"  # or CONTAINS (a DLL the MSI bundles)


@dataclass(frozen=True)
class CrossBuilt:
    """A library cross-built in the build image from a pinned Debian orig tarball."""

    source: str  # glib2.0
    version: str  # the Debian version whose orig tarball was built
    orig_name: str
    orig_sha256: str
    files: tuple[str, ...]  # the DLLs (or import libraries) it made
    into: str
    relationship: str = "DYNAMIC_LINK"


@dataclass
class SbomInputs:
    recipe: str
    version: str  # the release version (10.0.13+qga1)
    tool_version: str
    source_date_epoch: int
    distro: str  # debian-13
    source: Mapping[str, Any]  # the manifest's `source` record
    patches: Sequence[Mapping[str, str]]  # name, sha256
    built: list[Built] = field(default_factory=list)
    how_found: str = ""  # said in the document's comment (how the libraries were found)
    debian: list[DebianLibrary] = field(default_factory=list)
    cross: list[CrossBuilt] = field(default_factory=list)


def _id(kind: str, name: str) -> str:
    return f"SPDXRef-{kind}-" + re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-")


def deb_purl(package: str, version: str, architecture: str, distro: str) -> str:
    return (
        f"pkg:deb/debian/{quote(package, safe='')}@{quote(version, safe='')}"
        f"?arch={architecture}&distro={distro}"
    )


def _package(
    spdx_id: str,
    name: str,
    version: str | None,
    *,
    sha256: str | None = None,
    purls: Iterable[str] = (),
    purpose: str,
    comment: str | None = None,
    download: str = "NOASSERTION",
) -> dict[str, Any]:
    package: dict[str, Any] = {
        "SPDXID": spdx_id,
        "name": name,
        "downloadLocation": download,
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
        "primaryPackagePurpose": purpose,
    }
    if version:
        package["versionInfo"] = version
    if sha256:
        package["checksums"] = [{"algorithm": "SHA256", "checksumValue": sha256}]
    refs = [
        {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p}
        for p in purls
    ]
    if refs:
        package["externalRefs"] = refs
    if comment:
        package["comment"] = comment
    return package


def _rel(a: str, kind: str, b: str) -> dict[str, str]:
    return {"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b}


def _source_package(inputs: SbomInputs) -> dict[str, Any]:
    source = inputs.source
    version = str(source.get("version") or source.get("ref") or "") or None
    purls = []
    if source.get("kind") in ("debian", "mirror") and version:
        purls.append(
            deb_purl(str(source.get("package") or "qemu"), version, "source", inputs.distro)
        )
    download = str(source.get("url") or "NOASSERTION")
    return _package(
        "SPDXRef-Source-qemu",
        "qemu",
        version,
        sha256=str(source.get("sha256") or "") or None,
        purls=purls,
        purpose="SOURCE",
        comment=f"QEMU's source ({source.get('kind')})",
        download=download
        if download.startswith(("http://", "https://", "git+"))
        else "NOASSERTION",
    )


def document(inputs: SbomInputs) -> dict[str, Any]:
    packages = [_source_package(inputs)]
    relationships = []
    built_ids = {}
    for built in sorted(inputs.built, key=lambda b: b.name):
        spdx_id = _id("Built", built.name)
        built_ids[built.name] = spdx_id
        packages.append(
            _package(
                spdx_id, built.name, inputs.version, sha256=built.sha256, purpose=built.purpose
            )
        )
        relationships.append(_rel("SPDXRef-DOCUMENT", "DESCRIBES", spdx_id))
        if built.purpose in ("APPLICATION", "LIBRARY"):  # made from QEMU's source
            relationships.append(_rel(spdx_id, "GENERATED_FROM", "SPDXRef-Source-qemu"))
    for patch in sorted(inputs.patches, key=lambda p: p["name"]):
        spdx_id = _id("Patch", patch["name"])
        packages.append(
            _package(
                spdx_id,
                patch["name"],
                None,
                sha256=patch["sha256"],
                purpose="SOURCE",
                comment="a patch of ours, applied to QEMU's source before the build",
            )
        )
        relationships.append(_rel(spdx_id, "PATCH_APPLIED", "SPDXRef-Source-qemu"))
    for library in sorted(inputs.debian, key=lambda d: (d.source, d.package, d.into)):
        spdx_id = _id("Debian", f"{library.package}-{library.into}-{library.relationship}")
        packages.append(
            _package(
                spdx_id,
                library.source,
                library.source_version,
                purls=[
                    deb_purl(library.source, library.source_version, "source", inputs.distro),
                    deb_purl(library.package, library.version, library.architecture, inputs.distro),
                ],
                purpose="LIBRARY",
                comment=f"from Debian's {library.package} {library.version} "
                f"({library.architecture}): {', '.join(sorted(library.files))}",
            )
        )
        relationships.append(_rel(built_ids[library.into], library.relationship, spdx_id))
    for cross in sorted(inputs.cross, key=lambda c: (c.source, c.into)):
        spdx_id = _id("CrossBuilt", f"{cross.source}-{cross.into}-{cross.relationship}")
        packages.append(
            _package(
                spdx_id,
                cross.source,
                cross.version,
                sha256=cross.orig_sha256,
                purls=[deb_purl(cross.source, cross.version, "source", inputs.distro)],
                purpose="LIBRARY",
                comment=f"cross-built in the build image from {cross.orig_name} (the sha256 "
                f"is the orig tarball's): {', '.join(sorted(cross.files))}",
            )
        )
        relationships.append(_rel(built_ids[cross.into], cross.relationship, spdx_id))
    document = _wrap(
        f"{inputs.recipe} {inputs.version}",
        _namespace(inputs.recipe, packages),
        inputs.tool_version,
        inputs.source_date_epoch,
        packages,
        relationships,
    )
    if inputs.how_found:
        document["comment"] = inputs.how_found
    return document


def release_document(
    name: str,
    tool_version: str,
    source_date_epoch: int,
    inputs: Mapping[str, bytes],  # recipe -> its sbom.spdx.json bytes
) -> dict[str, Any]:
    """One document for a release: each recipe's document referred to by namespace and SHA1
    (SPDX's checksum for a document reference), its sha256 in the comment."""
    refs, packages, relationships = [], [], []
    for recipe, data in sorted(inputs.items()):
        referred = json.loads(data)
        ref_id = _id("DocumentRef", recipe).replace("SPDXRef-", "", 1)
        refs.append(
            {
                "externalDocumentId": ref_id,
                "spdxDocument": referred["documentNamespace"],
                "checksum": {
                    "algorithm": "SHA1",
                    "checksumValue": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
                },
            }
        )
        spdx_id = _id("Recipe", recipe)
        packages.append(
            _package(
                spdx_id,
                recipe,
                None,
                purpose="APPLICATION",
                comment=f"manifests/{recipe}.json; its SBOM's sha256 "
                f"{hashlib.sha256(data).hexdigest()}",
            )
        )
        relationships.append(_rel("SPDXRef-DOCUMENT", "DESCRIBES", spdx_id))
        for described in referred.get("documentDescribes", []) or [
            r["relatedSpdxElement"]
            for r in referred.get("relationships", [])
            if r.get("relationshipType") == "DESCRIBES"
        ]:
            relationships.append(_rel(spdx_id, "CONTAINS", f"{ref_id}:{described}"))
    document = _wrap(
        name,
        _namespace(name, packages + refs),
        tool_version,
        source_date_epoch,
        packages,
        relationships,
    )
    document["externalDocumentRefs"] = refs
    return document


def _namespace(name: str, content: object) -> str:
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return f"{NAMESPACE_ROOT}/{quote(name, safe='')}-{digest}"


def _wrap(
    name: str,
    namespace: str,
    tool_version: str,
    source_date_epoch: int,
    packages: list[dict[str, Any]],
    relationships: list[dict[str, str]],
) -> dict[str, Any]:
    created = datetime.fromtimestamp(source_date_epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": namespace,
        "creationInfo": {"created": created, "creators": [f"Tool: qga-builder-{tool_version}"]},
        "packages": packages,
        "relationships": relationships,
    }


def encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True).encode() + b"\n"
