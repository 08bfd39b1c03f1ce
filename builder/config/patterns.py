"""The recipe's patterns, each with what it means in words and a valid example.

pydantic says a mismatch as "String should match pattern '^[1-9][0-9]{0,5}[kmg]$'", which a
reader has to decode; `in_words` says "'4gb' is not a size: a number with k, m or g, e.g. 4g".
Every pattern a recipe field uses is made with `pattern()`, so none is left without words (a
unit test walks the schema for it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Words:
    what: str  # completes "'VALUE' is not ..."
    example: str  # a value the pattern accepts


_WORDS: dict[str, Words] = {}


def pattern(regex: str, what: str, example: str) -> str:
    """Register a field pattern with its words; returns the regex, for Field(pattern=...)."""
    known = _WORDS.setdefault(regex, Words(what, example))
    if known != Words(what, example):  # one regex, one meaning: two wordings would confuse
        raise AssertionError(f"pattern {regex} is described twice")
    return regex


def words_for(regex: str) -> Words | None:
    return _WORDS.get(regex)


def in_words(regex: str, value: object) -> str | None:
    """A pattern mismatch said in words, or None for a pattern without any."""
    words = _WORDS.get(regex)
    if words is None:
        return None
    return f"{value!r} is not {words.what}, e.g. {words.example}"


SHA256 = pattern(
    r"^[0-9a-f]{64}$",
    "a sha256: 64 lower-case hex digits (what `sha256sum FILE` prints)",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
)
GIT_COMMIT = pattern(
    r"^[0-9a-f]{40}$",
    "a full git commit id: 40 lower-case hex digits",
    "0123456789abcdef0123456789abcdef01234567",
)
RECIPE_NAME = pattern(
    r"^[a-z0-9][a-z0-9._-]{0,63}$",
    "a name: 1-64 of a-z 0-9 . _ -, starting with a letter or digit",
    "linux-static",
)
SUITE = pattern(r"^[a-z]{2,32}$", "a Debian suite: 2-32 lower-case letters", "trixie")
DEBIAN_SUITE = pattern(r"^[a-z-]{2,32}$", "a Debian suite: 2-32 lower-case letters and -", "trixie")
MIRROR = pattern(
    r"^(https?|file)://[^\s]{1,500}$",
    "a mirror URL: http://, https:// or file:// and no spaces",
    "http://mirror.example/debian",
)
MIRROR_POOL_PATH = pattern(
    r"^pool/[a-z0-9-]{1,32}/[a-z0-9]{1,5}/[a-z0-9][a-z0-9+.-]{0,63}/"
    r"[a-z0-9][a-z0-9+.-]{0,63}_[0-9A-Za-z.+~-]{1,64}\.orig\.tar\.(xz|gz|bz2)$",
    "a Debian orig tarball's path under the mirror: pool/COMPONENT/LETTER/SOURCE/"
    "SOURCE_VERSION.orig.tar.xz (gz, bz2), no host name",
    "pool/main/q/qemu/qemu_11.1.1+ds.orig.tar.xz",
)
PACKAGE = pattern(
    r"^[a-z0-9][a-z0-9+.:=~_-]{0,127}$",
    "a package (name or name=version): lower-case letters, digits and + . : = ~ _ -",
    "libglib2.0-dev",
)
BUILD_ARG = pattern(
    r"^[A-Z][A-Z0-9_]{0,63}$",
    "a build arg name: upper-case letters, digits and _, starting with a letter",
    "EXTRA_CFLAGS",
)
GIT_TAG = pattern(
    r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,127}$",
    "a git tag: letters, digits and . _ / + -, starting with a letter or digit",
    "v10.0.2",
)
DEBIAN_PACKAGE = pattern(
    r"^[a-z0-9][a-z0-9+.-]{1,63}$",
    "a Debian source package name: lower-case letters, digits and + . -",
    "qemu",
)
DEBIAN_VERSION = pattern(
    r"^[0-9A-Za-z.+~:-]{1,64}$",
    "a Debian version: letters, digits and . + ~ : -",
    "1:10.0.13+ds-0+deb13u1",
)
NINJA_TARGET = pattern(
    r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,127}$",
    "a ninja target: letters, digits and . _ / -",
    "qemu-ga",
)
MEMORY = pattern(r"^[1-9][0-9]{0,5}[kmg]$", "a size: a number with k, m or g", "4g")
EXEC_PATH = pattern(
    r"^/[A-Za-z0-9._/-]{1,255}$",
    "an absolute path: / then letters, digits and . _ / -",
    "/usr/sbin/qemu-ga-patched-static",
)
MSI_TEXT = pattern(
    r"^[A-Za-z0-9 ._()-]{1,64}$",
    "1-64 of letters, digits, spaces and . _ ( ) -",
    "QEMU",
)
MSI_VERSION = pattern(
    r"^[0-9]{1,3}(\.[0-9]{1,5}){1,3}$",
    "an installer version: 2 to 4 numbers joined by dots",
    "10.0.13",
)
ARTIFACT_PATH = pattern(
    r"^[A-Za-z0-9._+-][A-Za-z0-9._/+-]{0,255}$",
    "a path in the build directory: letters, digits and . _ / + -",
    "qga/qemu-ga",
)
ARTIFACT_NAME_TEMPLATE = pattern(
    r"^(?:[A-Za-z0-9_+]|\{version\})(?:[A-Za-z0-9._+-]|\{version\}){0,127}$",
    "a file name: 1-128 of A-Z a-z 0-9 . _ + - and {version}, not starting with . or -",
    "qemu-ga-patched-{version}-linux-x86_64-static",
)
PATCH_FILE = pattern(
    r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\.patch$",
    "a patch file name: letters, digits and . _ + -, ending in .patch",
    "0001-qga-stream-guest-exec-output.patch",
)
