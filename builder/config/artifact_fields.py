"""The recipe's `artifacts:` entries: what the build makes and the names it is published under.

A name may hold `{version}`, the release version; stage `series` resolves it when the QEMU
version is known, and the resolved name is checked again (`artifact_name_problem`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from builder.config import patterns
from builder.config.package_fields import PACKAGE_KINDS

# Files and directories the tool writes into an output directory (or a release) itself.
RESERVED_NAMES = frozenset(
    {
        "SHA256SUMS",
        "manifest.json",
        "logs",
        "provenance.intoto.json",
        "release.json",
        "manifests",
        "provenance.intoto.jsonl",
        "qemu-guest-agent.service",
        "qemu-guest-agent.init",
        "qemu-guest-agent.conf",
    }
)

# A published file's name (not starting with . or -), and in a recipe the same with `{version}`
# standing for the release version anywhere in it (resolved in stage `series`).
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9._+-]{0,127}$")
VERSION_PLACEHOLDER = "{version}"
ARTIFACT_NAME_TEMPLATE = patterns.ARTIFACT_NAME_TEMPLATE


class Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Annotated[str, Field(pattern=patterns.ARTIFACT_PATH)] | None = Field(
        None, description="path in the build directory (not for deb, rpm, tarball)"
    )
    name: Annotated[str, Field(pattern=ARTIFACT_NAME_TEMPLATE)] | None = Field(
        None,
        description="file name in the output directory (not starting with . or -); "
        "`{version}` in it stands for the release version (package.version, default the QEMU "
        "version + `+qga1`), e.g. qemu-ga-patched-{version}-linux-x86_64-static; deb, rpm and "
        "tarball are named by the tool from `package:`",
    )
    kind: Literal["static-elf", "pe", "msi", "file", "deb", "rpm", "tarball"] = Field(
        "file",
        description="static-elf: a static, stripped ELF that prints its version; pe: a Windows "
        "executable or DLL; msi: an installer whose contents are checked; file: anything; "
        "deb, rpm, tarball: packages of the recipe's static-elf agent (Linux)",
    )
    strip: bool = True

    @field_validator("name", mode="before")
    @classmethod
    def _only_the_version_placeholder(cls, name: object) -> object:
        if isinstance(name, str):
            stray = re.search(r"\{[^{}]*\}|[{}]", name.replace(VERSION_PLACEHOLDER, ""))
            if stray:
                raise ValueError(
                    f"{stray.group()!r}: an artifact name takes no placeholder but {{version}}"
                )
        return name

    @model_validator(mode="after")
    def _no_escape(self) -> Artifact:
        if self.kind in PACKAGE_KINDS:
            if self.path is not None or self.name is not None:
                raise ValueError(
                    f"a {self.kind} artifact takes no path or name: the tool makes it from the "
                    "static-elf artifact and names it from `package:`"
                )
            return self
        if self.path is None or self.name is None:
            raise ValueError(f"a {self.kind} artifact needs a path and a name")
        if ".." in self.path.split("/"):
            raise ValueError("path must stay inside the build directory")
        return self


def artifact_name_problem(name: str) -> str | None:
    """What is wrong with a published artifact's name (after `{version}` is resolved)."""
    if not ARTIFACT_NAME.match(name):
        return (
            f"{name!r} is not a file name an artifact can have (1-128 of A-Z a-z 0-9 . _ + -, "
            "not starting with . or -)"
        )
    if name in RESERVED_NAMES:
        return f"artifact name {name!r} is reserved for the tool"
    return None


def names_problem(names: list[str]) -> str | None:
    """Reserved or repeated names among a recipe's artifacts (templates, or resolved)."""
    seen: set[str] = set()
    for name in names:
        if name in RESERVED_NAMES:
            return f"artifact name {name!r} is reserved for the tool"
        if name in seen:
            return f"artifact name {name!r} is used twice"
        seen.add(name)
    return None
