"""Throwaway Authenticode keys for the tests, made with openssl: a CA, a code-signing
certificate it issued (as a PKCS#12 file with a password, and imported into a softhsm2 token
with a PIN), and an offline time-stamping authority (osslsigncode's -TSA-* options)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PFX_PASSWORD = "pfx pass 1"
TOKEN_PIN = "4711"
KEY_URI = "pkcs11:token=qga-tests;object=signer;type=private"

EXTENSIONS = """
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[codesign]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[tsa]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical,CA:FALSE
extendedKeyUsage = serverAuth
"""


@dataclass(frozen=True)
class AuthenticodeKeys:
    directory: Path
    ca: Path  # what `osslsigncode verify -CAfile` trusts
    pfx: Path
    certificate: Path  # the signer's certificate and the CA's, PEM (for the token's key)
    tsa_certificate: Path
    tsa_key: Path
    not_for_code: Path  # a PKCS#12 of a TLS server certificate: refused before any build
    softhsm_conf: Path

    def token_env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.softhsm_conf)}


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _issue(directory: Path, name: str, subject: str, section: str) -> None:
    _openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-config", "ext.cnf")  # fmt: skip
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey",
             "ca.key", "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
             "-extfile", "ext.cnf", "-extensions", section)  # fmt: skip


def make_keys(directory: Path) -> AuthenticodeKeys:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ext.cnf").write_text(EXTENSIONS)
    _openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=qga-builder test CA", "-keyout", "ca.key", "-out", "ca.pem",
             "-config", "ext.cnf", "-extensions", "ca")  # fmt: skip
    _issue(directory, "signer", "/CN=qga-builder test signer/O=Tests", "codesign")
    _issue(directory, "tsa", "/CN=qga-builder test TSA", "tsa")
    _issue(directory, "server", "/CN=qga-builder test server", "server")
    for name, out in (("signer", "signer.p12"), ("server", "server.p12")):
        _openssl(directory, "pkcs12", "-export", "-inkey", f"{name}.key", "-in",
                 f"{name}.pem", "-certfile", "ca.pem", "-out", out,
                 "-passout", f"pass:{PFX_PASSWORD}")  # fmt: skip
    chain = directory / "signer-chain.pem"
    chain.write_text((directory / "signer.pem").read_text() + (directory / "ca.pem").read_text())
    tsa_chain = directory / "tsa-chain.pem"
    tsa_chain.write_text((directory / "tsa.pem").read_text() + (directory / "ca.pem").read_text())
    conf = _token(directory)
    return AuthenticodeKeys(
        directory=directory,
        ca=directory / "ca.pem",
        pfx=directory / "signer.p12",
        certificate=chain,
        tsa_certificate=tsa_chain,
        tsa_key=directory / "tsa.key",
        not_for_code=directory / "server.p12",
        softhsm_conf=conf,
    )


def _token(directory: Path) -> Path:
    """A softhsm2 token holding the signer's key, in a directory of the test's own."""
    tokens = directory / "tokens"
    tokens.mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    label = KEY_URI.split("token=")[1].split(";")[0]
    _openssl(directory, "pkcs8", "-topk8", "-nocrypt", "-in", "signer.key", "-out", "signer.pk8")
    for argv in (
        ["--init-token", "--free", "--label", label, "--pin", TOKEN_PIN, "--so-pin", "123456"],
        ["--import", "signer.pk8", "--token", label, "--label", "signer", "--id", "01",
         "--pin", TOKEN_PIN],
    ):  # fmt: skip
        subprocess.run(
            ["softhsm2-util", *argv], cwd=directory, env=env, check=True, capture_output=True
        )
    return conf


def token_signing(keys: AuthenticodeKeys) -> tuple[list[str], dict[str, str]]:
    """`run`'s options and environment to sign with the key in the softhsm2 token, time-stamped
    by the offline authority when this host's osslsigncode has it (2.7 and later; Debian 12's
    2.5 refuses it, a unit test says how). Returns (options, environment)."""
    from builder.host import authenticode

    options = [
        "--authenticode-pkcs11-module", str(SOFTHSM_MODULE), "--authenticode-key-uri", KEY_URI,
        "--authenticode-cert", str(keys.certificate),
    ]  # fmt: skip
    if authenticode.offline_time_stamps():
        options += ["--authenticode-tsa-cert", str(keys.tsa_certificate)]
        options += ["--authenticode-tsa-key", str(keys.tsa_key)]
    return options, {"QGA_AUTHENTICODE_PASSWORD": TOKEN_PIN, **keys.token_env()}
