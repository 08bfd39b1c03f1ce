"""provenance.intoto.json against the in-toto Statement v1 and SLSA Provenance v1 specs."""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlparse

from builder.formats.provenance import PREDICATE_TYPE, STATEMENT_TYPE, package_purl, statement

MANIFEST = {
    "recipe": {
        "name": "linux-static",
        "path": "recipes/linux-static.yaml",
        "sha256": "a" * 64,
        "text": "name: linux-static\n",
        "overrides": {"qemu_ref": "v10.0.2"},
    },
    "cache_key": "b" * 64,
    "source": {
        "kind": "debian",
        "package": "qemu",
        "version": "1:10.0.13+ds-0+deb13u1",
        "suite": "trixie",
        "sha256": "c" * 64,
        "file": "qemu_10.0.13+ds.orig.tar.xz",
    },
    "patches": [{"name": "0001-x.patch", "path": "/p/0001-x.patch", "sha256": "d" * 64}],
    "environment": {
        "base": {
            "kind": "debootstrap",
            "reference": "qga-builder/base:trixie-minbase",
            "suite": "trixie",
            "variant": "minbase",
            "image_id": "sha256:" + "e" * 64,
        },
        "image": {
            "tag": "qga-builder/dockerfile.linux:0123",
            "id": "sha256:" + "f" * 64,
            "dockerfile": "/p/Dockerfile.linux",
            "dockerfile_sha256": "1" * 64,
        },
        "packages": {"gcc": "4:14.2.0-1 amd64", "libc6-dev": "2.41-12 amd64"},
    },
    "build": {
        "configure": "configure --static",
        "targets": ["qemu-ga"],
        "source_date_epoch": 1787772745,
    },
    "artifacts": [{"name": "qemu-ga-patched-static", "sha256": "2" * 64}],
    "started": "2026-11-27T02:19:06Z",
    "finished": "2026-11-27T02:21:07Z",
    "host": {"docker_server": "20.10.24"},
}

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _is_uri(value: str) -> bool:
    return bool(urlparse(value).scheme)


def test_statement_layer() -> None:
    doc = statement(MANIFEST, "run1")
    assert doc["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    assert doc["subject"] == [{"name": "qemu-ga-patched-static", "digest": {"sha256": "2" * 64}}]
    for subject in doc["subject"]:
        assert all(HEX64.match(v) for v in subject["digest"].values())


def test_build_definition() -> None:
    definition = statement(MANIFEST, "run1")["predicate"]["buildDefinition"]
    assert _is_uri(definition["buildType"])
    assert definition["externalParameters"]["recipe"]["sha256"] == "a" * 64
    assert definition["externalParameters"]["overrides"] == {"qemu_ref": "v10.0.2"}
    assert definition["internalParameters"]["SOURCE_DATE_EPOCH"] == 1787772745
    deps = {d["name"]: d for d in definition["resolvedDependencies"]}
    assert deps["source"]["digest"] == {"sha256": "c" * 64}
    assert deps["patch:0001-x.patch"]["digest"] == {"sha256": "d" * 64}
    assert deps["base-image"]["digest"] == {"sha256": "e" * 64}
    assert deps["build-image"]["digest"] == {"sha256": "f" * 64}
    assert deps["gcc"]["uri"] == "pkg:deb/debian/gcc@4%3A14.2.0-1?arch=amd64"
    for dep in definition["resolvedDependencies"]:
        # A ResourceDescriptor needs at least one of uri, digest, content.
        assert dep.get("uri") or dep.get("digest")
        assert _is_uri(dep["uri"])


def test_run_details() -> None:
    run = statement(MANIFEST, "run1")["predicate"]["runDetails"]
    assert _is_uri(run["builder"]["id"])
    assert run["builder"]["version"]["qga-builder"]
    assert run["metadata"]["invocationId"] == "run1"
    for key in ("startedOn", "finishedOn"):
        datetime.fromisoformat(run["metadata"][key].replace("Z", "+00:00"))  # RFC 3339


def test_purl_escapes_epochs() -> None:
    assert package_purl("libc6", "2.41-12 amd64") == "pkg:deb/debian/libc6@2.41-12?arch=amd64"
    assert "%3A" in package_purl("gcc", "4:14 amd64")
