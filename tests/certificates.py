"""Certificates made with openssl for the TLS tests: a CA, servers and clients it signs."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    """DIRECTORY/ca.pem and ca-key.pem: a CA valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            f"/CN={name}", "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=directory)  # fmt: skip


def sign(directory: Path, name: str, ca: Path, san: str | None = None) -> None:
    """DIRECTORY/NAME.pem and NAME-key.pem signed by the CA in `ca`: a server certificate
    for `san` (e.g. IP:127.0.0.1), or without it a client certificate."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", cwd=directory)  # fmt: skip
    extra = directory / f"{name}.ext"
    extra.write_text(
        f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n"
        if san
        else "extendedKeyUsage=clientAuth\n"
    )
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca / "ca.pem"), "-CAkey",
            str(ca / "ca-key.pem"), "-CAcreateserial", "-days", "1", "-extfile", str(extra),
            "-out", f"{name}.pem", cwd=directory)  # fmt: skip


def client_directory(directory: Path, ca: Path) -> Path:
    """A DOCKER_CERT_PATH: ca.pem of `ca` and a client certificate it signed as cert.pem and
    key.pem (the names docker's clients look for)."""
    sign(ca, f"client-{directory.name}", ca)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes((ca / "ca.pem").read_bytes())
    (directory / "cert.pem").write_bytes((ca / f"client-{directory.name}.pem").read_bytes())
    (directory / "key.pem").write_bytes((ca / f"client-{directory.name}-key.pem").read_bytes())
    return directory
