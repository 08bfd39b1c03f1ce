"""The recipe's `package:` section: fields of the deb, rpm and tarball artifacts, checked at
`validate` against what Debian and RPM both accept."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from builder.formats import package_sources

# Made by the `package` stage from the static agent, named from the package's name and version.
PACKAGE_KINDS = frozenset({"deb", "rpm", "tarball"})


class Package(BaseModel):
    """Fields of the deb, rpm and tarball artifacts (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        "qemu-ga-patched",
        description="package name: lower-case letters, digits, + . - (Debian and RPM rules)",
    )
    version: str | None = Field(
        None,
        description="upstream version, e.g. 10.0.13+qga1 (digits first; letters, digits . + ~); "
        "default: the QEMU version + `+qga1`",
    )
    revision: str = Field("1", description="Debian revision and RPM release")
    maintainer: str = Field(
        "qga-builder <qga-builder@example.org>",
        description="Debian Maintainer and RPM Packager: `Full Name <address>`",
    )

    @field_validator("name")
    @classmethod
    def _package_name(cls, name: str) -> str:
        if not package_sources.NAME_RE.match(name):
            raise ValueError(
                f"{name!r} is not a valid Debian/RPM package name: 2-63 characters, lower-case "
                "letters, digits and + . -, starting with a letter or digit"
            )
        return name

    @field_validator("version", "revision")
    @classmethod
    def _package_version(cls, version: str | None) -> str | None:
        problem = version and package_sources.version_problem(version)
        if problem:
            raise ValueError(problem)
        return version

    @field_validator("maintainer")
    @classmethod
    def _maintainer(cls, maintainer: str) -> str:
        if not package_sources.MAINTAINER_RE.match(maintainer):
            raise ValueError(f"{maintainer!r} is not `Full Name <user@domain.tld>`")
        return maintainer
