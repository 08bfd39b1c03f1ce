"""Authenticode signatures with Debian's `osslsigncode`, on the host: it reads and writes files
and runs nothing that was built. The key is a PKCS#12 file or a PKCS#11 token (hardware, or
softhsm2); its password or PIN reaches osslsigncode on its standard input, never on a command
line, in the environment of a child, a log, the manifest or a cache key."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from builder.config.settings import child_environment
from builder.errors import HostToolError, SigningKeyError
from builder.formats.pe import minimal_pe

DESCRIPTION = "QEMU Guest Agent"
DIGEST = "sha256"
MAX_KEY_FILE_BYTES = 1 << 20
HINT = 'the Authenticode key: --authenticode-pfx FILE, or a PKCS#11 token (README "Authenticode")'
TIMEOUT = 300  # one file; a time-stamping server that never answers is an error, not a wait


@dataclass(frozen=True)
class AuthenticodeKey:
    """What the options name: a PKCS#12 file, or a PKCS#11 module, key URI and certificate."""

    pfx: Path | None = None
    module: Path | None = None
    key_uri: str | None = None
    certificate: Path | None = None  # PEM, the signer's first, then its chain (PKCS#11 only)
    password: bytes | None = field(default=None, repr=False)
    password_source: str = ""
    timestamp_url: str | None = None  # RFC 3161
    tsa_certificate: Path | None = None  # an offline time-stamping authority of the user's
    tsa_key: Path | None = None

    @property
    def store(self) -> str:
        return "pkcs12" if self.pfx is not None else "pkcs11"


class AuthenticodeSigner:
    """A checked key: `sign` makes a signed copy of a PE file or an MSI."""

    def __init__(self, key: AuthenticodeKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate
        self.fingerprint = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()
        self.subject = certificate.subject.rfc4514_string()

    def sign(self, source: Path, signed: Path, signing_time: int) -> None:
        """Sign `source` into `signed` (a new file). The signing time is the run's
        SOURCE_DATE_EPOCH: an RSA key signs the same file the same way each time (a time stamp,
        which a server makes, is the only part that differs between runs)."""
        argv = [*self._key_arguments(), "-h", DIGEST, "-n", DESCRIPTION]
        argv += ["-time", str(signing_time), *self._timestamp_arguments()]
        _osslsigncode(["sign", *argv, "-in", str(source), "-out", str(signed)], self.key.password)

    def _key_arguments(self) -> list[str]:
        key = self.key
        if key.pfx is not None:
            argv = ["-pkcs12", str(key.pfx)]
        else:
            assert key.module is not None and key.key_uri is not None
            assert key.certificate is not None
            argv = ["-pkcs11module", str(key.module), "-certs", str(key.certificate)]
            argv += ["-key", key.key_uri]
        # The password through a pipe (-readpass /dev/fd/N; an empty one when there is none).
        return [*argv, "-readpass", PASSWORD_PIPE]

    def _timestamp_arguments(self) -> list[str]:
        key = self.key
        if key.timestamp_url is not None:
            return ["-ts", key.timestamp_url]
        if key.tsa_certificate is not None and key.tsa_key is not None:
            if not offline_time_stamps():
                raise HostToolError(
                    "an offline time-stamping authority needs osslsigncode 2.7 or newer; this "
                    f"host has {osslsigncode_version()}",
                    hint="install a newer osslsigncode (Debian 13, or Debian 12's backports)",
                )
            now = str(int(time.time()))
            certificate, tsa_key = str(key.tsa_certificate), str(key.tsa_key)
            return ["-TSA-certs", certificate, "-TSA-key", tsa_key, "-TSA-time", now]
        return []

    def timestamp(self) -> str | None:
        if self.key.timestamp_url is not None:
            return f"RFC 3161: {self.key.timestamp_url}"
        if self.key.tsa_certificate is not None:
            return "RFC 3161: the offline time-stamping authority given"
        return None

    def identity(self) -> dict[str, Any]:
        """What a cached signed output depends on (the certificate, not the key)."""
        stamp = self.timestamp()
        digest = None if stamp is None else hashlib.sha256(stamp.encode()).hexdigest()
        return {"certificate_sha256": self.fingerprint, "timestamp_sha256": digest}

    def record(self) -> dict[str, Any]:
        return {
            "certificate_sha256": self.fingerprint,
            "subject": self.subject,
            "issuer": self.certificate.issuer.rfc4514_string(),
            "not_after": self.certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "key_store": self.key.store,
            "digest": DIGEST,
            "timestamp": self.timestamp(),
            "tool": osslsigncode_version(),
        }


def open_signer(key: AuthenticodeKey) -> AuthenticodeSigner:
    """Check the key before anything is built: its certificate is for code signing and
    valid now, and it signs a small executable (a wrong password or PIN fails here)."""
    _tool()
    certificate = _certificate(key)
    _check_certificate(certificate)
    signer = AuthenticodeSigner(key, certificate)
    with tempfile.TemporaryDirectory(prefix="qga-authenticode-") as scratch:
        trial = Path(scratch) / "trial.exe"
        trial.write_bytes(minimal_pe())
        try:
            signer.sign(trial, Path(scratch) / "signed.exe", int(time.time()))
        except AuthenticodeFailure as exc:
            stamped = " and that the time-stamping server answers" if signer.timestamp() else ""
            raise SigningKeyError(
                f"Authenticode key ({key.store}) cannot sign: {exc}",
                hint=f"the password or PIN came {key.password_source}; check it, the key" + stamped,
            ) from None
    return signer


def _certificate(key: AuthenticodeKey) -> x509.Certificate:
    if key.pfx is not None:
        data = _read_small(key.pfx, "--authenticode-pfx")
        try:
            _, certificate, _ = pkcs12.load_key_and_certificates(data, key.password)
        except ValueError:
            raise SigningKeyError(
                f"--authenticode-pfx {key.pfx}: not a PKCS#12 file, or the password (from "
                f"{key.password_source.removeprefix('from ')}) is wrong",
                hint="check it with `openssl pkcs12 -info -noout -in FILE`",
            ) from None
        if certificate is None:
            raise SigningKeyError(f"--authenticode-pfx {key.pfx}: holds no certificate", hint=HINT)
        return certificate
    assert key.certificate is not None
    data = _read_small(key.certificate, "--authenticode-cert")
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise SigningKeyError(
            f"--authenticode-cert {key.certificate}: not a PEM certificate", hint=HINT
        ) from None


def _check_certificate(certificate: x509.Certificate) -> None:
    subject = certificate.subject.rfc4514_string()
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is None or ExtendedKeyUsageOID.CODE_SIGNING not in usages:
        raise SigningKeyError(
            f"Authenticode certificate {subject} is not for code signing (its extended key "
            "usage has no codeSigning)",
            hint="sign with a code-signing certificate",
        )
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise SigningKeyError(
            f"Authenticode certificate {subject} is not valid now (valid "
            f"{certificate.not_valid_before_utc:%Y-%m-%d} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%d})",
            hint="sign with a certificate valid now",
        )


def _read_small(path: Path, option: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise SigningKeyError(f"{option} {path}: {exc.strerror}", hint=HINT) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise SigningKeyError(f"{option} {path}: larger than {MAX_KEY_FILE_BYTES} bytes", hint=HINT)
    return data


class AuthenticodeFailure(Exception):
    """osslsigncode failed; the message is its last lines (it never prints the password)."""


def remove_signature(signed: Path, unsigned: Path) -> None:
    """The file as it was before it was signed (for a PE file, the same bytes)."""
    _osslsigncode(["remove-signature", "-in", str(signed), "-out", str(unsigned)], None)


def _tool() -> str:
    found = shutil.which("osslsigncode")
    if found is None:
        raise HostToolError(
            "osslsigncode is not installed: Authenticode signing needs it",
            hint="apt-get install osslsigncode (make setup installs it)",
        )
    return found


OFFLINE_TSA_VERSION = (2, 7)  # -TSA-certs, -TSA-key, -TSA-time
PASSWORD_PIPE = "/dev/fd/{fd}"
MAX_PASSWORD_BYTES = 4096  # written into the pipe at once: far below its buffer


@functools.cache
def osslsigncode_version() -> str:
    done = subprocess.run(
        [_tool(), "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env=child_environment(),
        stdin=subprocess.DEVNULL,
    )
    first = (done.stdout or done.stderr).splitlines()  # "osslsigncode 2.9, using:"
    return first[0].split(",")[0].strip() if first else "osslsigncode"


def offline_time_stamps() -> bool:
    """Whether this host's osslsigncode has its own time-stamping authority (2.7 and later)."""
    found = re.search(r"(\d+)\.(\d+)", osslsigncode_version())
    return found is not None and (int(found[1]), int(found[2])) >= OFFLINE_TSA_VERSION


def _osslsigncode(argv: list[str], password: bytes | None) -> str:
    """Run osslsigncode; the password, when the command reads one, through a pipe of its own
    (written before it starts: a password is far smaller than a pipe's buffer)."""
    read_fd = write_fd = -1
    if password is not None and len(password) > MAX_PASSWORD_BYTES:
        raise AuthenticodeFailure(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    if PASSWORD_PIPE in argv:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, password or b"")
        os.close(write_fd)
        argv = [PASSWORD_PIPE.format(fd=read_fd) if a == PASSWORD_PIPE else a for a in argv]
    try:
        done = subprocess.run(
            [_tool(), *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=child_environment(),
            timeout=TIMEOUT,
            check=False,
            pass_fds=(read_fd,) if read_fd >= 0 else (),
        )
    except subprocess.TimeoutExpired:
        raise AuthenticodeFailure(f"osslsigncode {argv[0]} took more than {TIMEOUT} s") from None
    finally:
        if read_fd >= 0:
            os.close(read_fd)
    printed = (done.stdout + done.stderr).decode("utf-8", "replace")
    if done.returncode != 0:
        lines = [line.strip() for line in printed.splitlines() if line.strip()]
        raise AuthenticodeFailure("; ".join(lines[-3:]) or f"exit {done.returncode}")
    return printed
