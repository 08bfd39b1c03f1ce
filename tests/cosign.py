"""The real `cosign` the README tells users to check signed provenance with: Debian 13's
package (cosign is packaged in trixie, not in this Debian 12 host's suite), pinned by version
and sha256, fetched once into the cache by the tool's own apt-state machinery and unpacked. It
only reads signatures and files; it runs on the host like gpg does."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from builder.formats.checksums import sha256_file
from builder.host import debian
from builder.host.cache import Cache
from builder.host.locks import exclusive
from builder.host.virtual_machine import deb_members

VERSION = "2.5.0-2+b5"
SHA256 = "3b6eadd27f3c4c00bfa7eab5c2397a6a15a763630c7a1d40d06ff60d24799eef"


def cosign() -> Path:
    cache = Cache.default()
    root = cache.dir("test-tools")
    program = root / f"cosign-{SHA256[:16]}"
    with exclusive(cache.lock_path("test-tools-cosign"), "cosign for the tests", lambda _: None):
        if program.is_file():
            return program
        debs = root / "debs"
        deb = debian.fetch_deb("cosign", VERSION, "trixie", debs, cache.apt, lambda _: None)
        assert sha256_file(deb) == SHA256, f"{deb}: not the pinned cosign {VERSION}"
        for member, tar in deb_members(deb):
            if member.name.lstrip("./") == "usr/bin/cosign" and member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                partial = program.with_suffix(".partial")
                partial.write_bytes(extracted.read())
                partial.chmod(0o755)
                partial.rename(program)
                return program
    raise AssertionError(f"{deb} holds no usr/bin/cosign")


def verify_blob_attestation(
    public_key: Path, envelope: Path, blob: Path
) -> subprocess.CompletedProcess[str]:
    """The README's command, as a user types it."""
    return subprocess.run(
        [
            str(cosign()),
            "verify-blob-attestation",
            "--key",
            str(public_key),
            "--signature",
            str(envelope),
            "--type",
            "slsaprovenance1",
            "--insecure-ignore-tlog",
            str(blob),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_key(directory: Path, name: str, key, password: bytes | None = None) -> tuple[Path, Path]:
    """KEY.pem (PKCS#8, encrypted with `password` if given) and KEY.pub, as openssl writes them."""
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    private = directory / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    public = directory / f"{name}.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public
