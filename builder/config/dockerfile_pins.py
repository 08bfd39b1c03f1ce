"""A Dockerfile's Debian source pins, read from its own text, and rewritten in place for
`bump --write`. A pin is a pair `ARG NAME_VERSION=<Debian version>` and `ARG NAME_SHA256=<the
orig tarball's sha256>`; the Dockerfile itself says which source package it is (`package=$NAME_
VERSION`, what `apt-get source` fetches) and which file the sha256 is of (`"$NAME_SHA256
package_${NAME_VERSION%-*}.orig.tar.xz"`, what `sha256sum -c` checks). Both are read rather than
kept in a table here, so the pins and the Dockerfile's use of them cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from builder.config import patterns
from builder.config.recipe_pins import write_checked
from builder.errors import InputError

_ARG = re.compile(
    r"^ARG[ \t]+(?P<name>[A-Z][A-Z0-9_]*)_(?P<kind>VERSION|SHA256)=(?P<value>\S*)[ \t\r]*$", re.M
)
_FETCH = re.compile(
    r"(?<![\w$])(?P<package>[a-z0-9][a-z0-9+.-]+)=\$(?P<name>[A-Z][A-Z0-9_]*)_VERSION\b"
)
_CHECK = re.compile(
    r"\"\$(?P<name>[A-Z][A-Z0-9_]*)_SHA256[ \t]+(?P<package>[a-z0-9][a-z0-9+.-]+)_"
    r"\$\{(?P=name)_VERSION%-\*\}(?P<suffix>\.orig\.tar\.[a-z0-9]+)\""
)
_DEBIAN_VERSION = re.compile(r"[0-9][0-9A-Za-z.+~:-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SourcePin:
    """One Debian source package the Dockerfile fetches and checks by sha256."""

    name: str  # the ARGs' prefix: GLIB for GLIB_VERSION and GLIB_SHA256
    package: str  # the Debian source package (glib2.0)
    version: str  # its Debian version (2.84.4-3~deb13u5)
    sha256: str  # of its orig tarball
    suffix: str  # .orig.tar.xz: the orig tarball is PACKAGE_UPSTREAM plus this

    def orig_name(self, version: str | None = None) -> str:
        """The orig tarball's name as the Dockerfile's check says it for `version`."""
        return f"{self.package}_{shell_upstream(version or self.version)}{self.suffix}"


def shell_upstream(version: str) -> str:
    """`${VERSION%-*}`: the version without its Debian revision, as the Dockerfile's shell
    cuts it (an epoch would stay: no orig tarball's name carries one)."""
    return version.rsplit("-", 1)[0] if "-" in version else version


def read_pins(text: str, where: str) -> list[SourcePin]:
    """Every pin of the Dockerfile, in the order of its ARG lines. An ARG pair the rest of the
    file does not use as a pin (no fetch, no check) is refused: bump could not tell what it is."""
    values: dict[tuple[str, str], str] = {}
    order: list[str] = []
    for match in _ARG.finditer(text):
        key = (match["name"], match["kind"])
        if key in values:
            raise InputError(f"{where}: ARG {key[0]}_{key[1]} is set twice; bump cannot tell which")
        values[key] = match["value"]
        if match["name"] not in order:
            order.append(match["name"])
    fetched = {m["name"]: m["package"] for m in _FETCH.finditer(text)}
    checked = {m["name"]: (m["package"], m["suffix"]) for m in _CHECK.finditer(text)}
    pins = []
    for name in order:
        if (name, "VERSION") not in values or (name, "SHA256") not in values:
            continue  # not a pair: some other ARG
        pins.append(_pin(name, values, fetched, checked, where))
    return pins


def _pin(
    name: str,
    values: dict[tuple[str, str], str],
    fetched: dict[str, str],
    checked: dict[str, tuple[str, str]],
    where: str,
) -> SourcePin:
    version, sha256 = values[(name, "VERSION")], values[(name, "SHA256")]
    package = fetched.get(name)
    if package is None or name not in checked or checked[name][0] != package:
        raise InputError(
            f"{where}: ARG {name}_VERSION and {name}_SHA256 are no source pin bump can read: "
            f"it needs `package=${name}_VERSION` (what apt-get source fetches) and "
            f'`"${name}_SHA256  package_${{{name}_VERSION%-*}}.orig.tar.EXT"` (the check), '
            "naming the same package",
            hint="write the pin as the others are, or edit it by hand",
        )
    if not _DEBIAN_VERSION.fullmatch(version) or not _SHA256.fullmatch(sha256):
        raise InputError(f"{where}: ARG {name}_VERSION={version} / {name}_SHA256 is not a pin")
    if not re.fullmatch(patterns.PACKAGE, package):
        raise InputError(f"{where}: {package!r} is no Debian package name")
    return SourcePin(name, package, version, sha256, checked[name][1])


def rewritten(text: str, values: dict[str, str]) -> str:
    """The Dockerfile's text with each `ARG KEY=` line's value replaced (KEY as GLIB_VERSION),
    every other character as it was."""
    for key, value in values.items():
        pattern = re.compile(rf"^(ARG[ \t]+{re.escape(key)}=)\S*([ \t\r]*)$", re.M)
        found = pattern.findall(text)
        if len(found) != 1:
            raise InputError(f"rewrite: {len(found)} `ARG {key}=` lines, not one; edit it by hand")
        line = pattern.search(text)
        assert line is not None
        text = f"{text[: line.start()]}{line[1]}{value}{line[2]}{text[line.end() :]}"
    return text


def rewrite_dockerfile(path: Path, values: dict[str, str]) -> None:
    """Replace the ARG values in the file, atomically: a copy is written beside it, read back
    as pins (each new value must be what it says), then renamed over it."""
    target = path.resolve()
    try:
        text = target.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"rewrite: cannot read {path}: {exc}") from None

    def says_the_pins(written: Path) -> None:
        said: dict[str, str] = {}
        for pin in read_pins(written.read_text(encoding="utf-8"), str(path)):
            said |= {f"{pin.name}_VERSION": pin.version, f"{pin.name}_SHA256": pin.sha256}
        if any(said.get(key) != value for key, value in values.items()):
            raise InputError(f"rewrite: {path} would not say the new pins; edit it by hand")

    write_checked(target, rewritten(text, values), says_the_pins)
