"""provenance.intoto.json: an in-toto Statement v1 carrying an SLSA Provenance v1 predicate.

Spec: https://in-toto.io/Statement/v1 and https://slsa.dev/spec/v1.0/provenance. Subjects are the
artifacts with their sha256; `buildDefinition` holds the recipe (external parameters) and every
resolved input (resolved dependencies: source, patches, Dockerfile, base and build images, and
each package of the toolchain as a Debian purl); `runDetails` names the builder and the times.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from builder import __version__

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# URNs: the build type is documented in README.md ("Provenance"); no web page is claimed.
BUILD_TYPE = "urn:qga-builder:buildtype:recipe:v1"
BUILDER_ID = "urn:qga-builder:builder:docker-engine:v1"
PROVENANCE_NAME = "provenance.intoto.json"


def _sha256(value: str | None) -> dict[str, str]:
    return {"sha256": value} if value else {}


def package_purl(name: str, version_arch: str, package_format: str = "deb") -> str:
    version, _, arch = version_arch.partition(" ")
    name = name.split(":")[0]  # a cross image's second libc6 is `libc6:arm64`: ?arch= says it
    distro = "fedora" if package_format == "rpm" else "debian"
    return (
        f"pkg:{package_format}/{distro}/{quote(name)}@{quote(version, safe='')}"
        f"?arch={arch or 'all'}"
    )


def statement(manifest: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Build the statement from a finished run's manifest (the manifest holds every input)."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": artifact["name"], "digest": {"sha256": artifact["sha256"]}}
            for artifact in manifest["artifacts"]
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": _build_definition(manifest),
            "runDetails": _run_details(manifest, run_id),
        },
    }


def _build_definition(manifest: dict[str, Any]) -> dict[str, Any]:
    """What was asked (the recipe and overrides), how (configure, targets, epoch), from what."""
    return {
        "buildType": BUILD_TYPE,
        "externalParameters": {
            "recipe": {
                "name": manifest["recipe"]["name"],
                "path": manifest["recipe"]["path"],
                "sha256": manifest["recipe"]["sha256"],
                "text": manifest["recipe"]["text"],
            },
            "overrides": manifest["recipe"]["overrides"],
        },
        "internalParameters": {
            "configure": manifest["build"]["configure"],
            "targets": manifest["build"]["targets"],
            "SOURCE_DATE_EPOCH": manifest["build"]["source_date_epoch"],
            "cache_key": manifest["cache_key"],
            "series": manifest.get("series", {}),
        },
        "resolvedDependencies": _dependencies(manifest),
    }


def _dependencies(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every input with its digest: source, patches, Dockerfile, images, the image's packages."""
    env = manifest["environment"]
    source = manifest["source"]
    return [
        {
            "name": "source",
            "uri": _source_uri(source),
            "digest": _sha256(source.get("sha256"))
            | ({"gitCommit": source["commit"]} if source.get("commit") else {}),
            "annotations": {k: v for k, v in source.items() if isinstance(v, str | int)},
        },
        *(
            {
                "name": f"patch:{patch['name']}",
                "uri": f"file:{patch['path']}",
                "digest": {"sha256": patch["sha256"]},
            }
            for patch in manifest["patches"]
        ),
        {
            "name": "dockerfile",
            "uri": f"file:{env['image']['dockerfile']}",
            "digest": {"sha256": env["image"]["dockerfile_sha256"]},
        },
        {
            "name": "base-image",
            "uri": _base_uri(env["base"]),
            "digest": {"sha256": env["base"]["image_id"].removeprefix("sha256:")},
            "annotations": {
                **{k: str(v) for k, v in env["base"].items() if v is not None},
                "distribution": env.get("distribution", "unknown"),
            },
        },
        {
            "name": "build-image",
            "uri": f"docker-image:{env['image']['tag']}",
            "digest": {"sha256": env["image"]["id"].removeprefix("sha256:")},
        },
        *(
            {"name": name, "uri": package_purl(name, version, env.get("package_format", "deb"))}
            for name, version in sorted(env["packages"].items())
        ),
    ]


def _run_details(manifest: dict[str, Any], run_id: str) -> dict[str, Any]:
    return {
        "builder": {
            "id": BUILDER_ID,
            "version": {
                "qga-builder": __version__,
                "docker-engine": manifest["host"]["docker_server"],
            },
        },
        "metadata": {
            "invocationId": run_id,
            "startedOn": manifest["started"],
            "finishedOn": manifest["finished"],
        },
    }


def _source_uri(source: dict[str, Any]) -> str:
    match source.get("kind"):
        case "git":
            return f"git+{source['url']}@{source.get('tag', '')}"
        case "debian":
            return (
                f"pkg:deb/debian/{source['package']}@{quote(source['version'], safe='')}"
                f"?arch=source&distro={source['suite']}"
            )
        case "tarball":
            return source.get("url") or f"file:{source.get('path')}"
        case "mirror":  # the file's path under the Debian mirror the run was configured with
            return f"debian-mirror:{source.get('path')}"
        case _:
            return f"file:{source.get('path')}"


def _base_uri(base: dict[str, Any]) -> str:
    if base.get("kind") == "registry":
        return f"docker-image:{base['reference']}"
    return f"debootstrap:{base.get('suite')}?variant={base.get('variant')}"
