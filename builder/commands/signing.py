"""The command line's OpenPGP options: the key `run` and `release` sign with (checked before
anything is built or written), and the public keys `verify` and `release` check with."""

from __future__ import annotations

import argparse
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from builder.config.settings import (
    ATTESTATION_PASSPHRASE_ENV,
    AUTHENTICODE_PASSWORD_ENV,
    PASSPHRASE_ENV,
    attestation_passphrase,
    authenticode_password,
    signing_passphrase,
)
from builder.errors import SigningKeyError, UsageError
from builder.host import authenticode
from builder.host.attestation_keys import AttestationSigner, load_signer
from builder.host.openpgp import (
    MAX_PASSPHRASE_BYTES,
    PublicKey,
    Signer,
    SigningRequest,
    open_signer,
    public_key,
)
from builder.log import get_logger

# A fingerprint (v4: 40 hex digits), a long key ID (16), with or without 0x, or a mail address.
KEY_ID = re.compile(
    r"^(?:(?:0x)?(?:[0-9A-Fa-f]{16}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})|<?[^\s<>@]+@[^\s<>@]+>?)$"
)


def signing_request(args: argparse.Namespace) -> SigningRequest | None:
    """What the options ask to sign with (None: no signing); the passphrase from
    --signing-passphrase-file, else QGA_SIGNING_PASSPHRASE, else none (the user's agent)."""
    key_file: Path | None = getattr(args, "signing_key", None)
    key_id: str | None = getattr(args, "signing_key_id", None)
    passphrase_file: Path | None = getattr(args, "signing_passphrase_file", None)
    if key_file is not None and key_id is not None:
        raise UsageError("--signing-key and --signing-key-id: give one of them")
    if key_file is None and key_id is None:
        if passphrase_file is not None:
            raise UsageError(
                "--signing-passphrase-file: only with --signing-key FILE or --signing-key-id ID"
            )
        return None
    if key_id is not None and not KEY_ID.match(key_id):
        raise UsageError(
            f"--signing-key-id {key_id!r}: not a fingerprint, key ID or mail address",
            hint="give the key's fingerprint (`gpg --list-secret-keys` shows it)",
        )
    passphrase: bytes | None
    if passphrase_file is not None:
        passphrase = read_passphrase_file(passphrase_file)
        source = f"from --signing-passphrase-file {passphrase_file}"
    else:
        passphrase, source = signing_passphrase(), f"from {PASSPHRASE_ENV}"
    # Not registered with `redact`: it is never written anywhere, and masking its text in
    # public logs would tell a reader of them which words the passphrase contains.
    return SigningRequest(
        key_file=key_file.absolute() if key_file is not None else None,
        key_id=key_id,
        passphrase=passphrase,
        passphrase_source=source,
    )


def read_passphrase_file(path: Path, option: str = "--signing-passphrase-file") -> bytes:
    """The passphrase a small regular file holds alone (a final line break is not part of it;
    a second line is refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SigningKeyError(f"{option} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SigningKeyError(f"{option} {path} is not a regular file")
        data = handle.read(MAX_PASSPHRASE_BYTES + 3)
    if info.st_mode & 0o077:
        get_logger().warning(
            "the passphrase file can be read by other users: chmod 600 it", file=str(path)
        )
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    if b"\n" in data or len(data) > MAX_PASSPHRASE_BYTES:
        raise SigningKeyError(
            f"{option} {path}: holds more than one line (or more than "
            f"{MAX_PASSPHRASE_BYTES} bytes); it must hold the passphrase alone"
        )
    return data


@contextmanager
def signer_for(args: argparse.Namespace) -> Iterator[Signer | None]:
    """The checked signer the options ask for (None without a signing key); SigningKeyError
    (exit 15) before anything is built when the key cannot sign."""
    with _checked(signing_request(args)) as signer:
        yield signer


@contextmanager
def _checked(request: SigningRequest | None) -> Iterator[Signer | None]:
    if request is None:
        yield None
        return
    with open_signer(request) as signer:
        get_logger().info(
            "signing key checked: SHA256SUMS will be signed", fingerprint=signer.fingerprint
        )
        yield signer


def check_signing_key(args: argparse.Namespace) -> dict[str, str]:
    """Only the checks (a matrix, before its first build: each build opens the keys itself).
    Returns what the builds' environment needs for them: the passphrases that came from
    QGA_SIGNING_PASSPHRASE or QGA_ATTESTATION_PASSPHRASE (which this process no longer
    holds, see `settings.signing_passphrase`)."""
    request = signing_request(args)
    with _checked(request):
        pass
    env: dict[str, str] = {}
    from_env = request is not None and request.passphrase_source == f"from {PASSPHRASE_ENV}"
    if request is not None and request.passphrase is not None and from_env:
        env[PASSPHRASE_ENV] = request.passphrase.decode("utf-8", "surrogateescape")
    key: Path | None = getattr(args, "attestation_key", None)
    if key is not None:
        passphrase = attestation_passphrase()
        load_signer(key, passphrase)
        if passphrase is not None:
            env[ATTESTATION_PASSPHRASE_ENV] = passphrase.decode("utf-8", "surrogateescape")
    code_key = authenticode_key(args)
    if code_key is not None:
        authenticode.open_signer(code_key)
        if code_key.password is not None and code_key.password_source.endswith(
            AUTHENTICODE_PASSWORD_ENV
        ):
            env[AUTHENTICODE_PASSWORD_ENV] = code_key.password.decode("utf-8", "surrogateescape")
    return env


def attester_for(args: argparse.Namespace) -> AttestationSigner | None:
    """The checked `--attestation-key` (None without one); SigningKeyError (exit 15) before
    anything is built when it cannot sign."""
    key: Path | None = getattr(args, "attestation_key", None)
    if key is None:
        return None
    signer = load_signer(key, attestation_passphrase())
    get_logger().info(
        "attestation key checked: the provenance will be signed (DSSE)",
        algorithm=signer.algorithm,
        public_key_sha256=signer.digest,
    )
    return signer


@contextmanager
def attested(args: argparse.Namespace) -> Iterator[AttestationSigner | None]:
    """`attester_for` as a context, beside the other keys of a run."""
    yield attester_for(args)


AUTHENTICODE_OPTIONS = (
    "authenticode_pfx",
    "authenticode_pkcs11_module",
    "authenticode_key_uri",
    "authenticode_cert",
    "authenticode_password_file",
    "authenticode_timestamp_url",
    "authenticode_tsa_cert",
    "authenticode_tsa_key",
)


def authenticode_key(args: argparse.Namespace) -> authenticode.AuthenticodeKey | None:
    """What the Authenticode options ask for (None: the Windows files are not signed)."""
    given = {name: getattr(args, name, None) for name in AUTHENTICODE_OPTIONS}
    pfx, module = given["authenticode_pfx"], given["authenticode_pkcs11_module"]
    uri, cert = given["authenticode_key_uri"], given["authenticode_cert"]
    if pfx is None and module is None:
        others = [name for name, value in given.items() if value is not None]
        if others:
            raise UsageError(
                f"--{others[0].replace('_', '-')}: only with --authenticode-pfx FILE or "
                "--authenticode-pkcs11-module FILE"
            )
        return None
    if module is not None and (uri is None or cert is None):
        raise UsageError(
            "--authenticode-pkcs11-module: give the key with --authenticode-key-uri URI and its "
            "certificate with --authenticode-cert FILE"
        )
    if pfx is not None and (uri is not None or cert is not None):
        raise UsageError(
            "--authenticode-key-uri and --authenticode-cert: only with --authenticode-pkcs11-module"
        )
    if uri is not None and (not uri.startswith("pkcs11:") or "pin-value" in uri):
        raise UsageError(
            f"--authenticode-key-uri: a PKCS#11 URI (pkcs11:...) without its PIN, not "
            f"{uri[:7]!r}..."
            if not uri.startswith("pkcs11:")
            else "--authenticode-key-uri: leave the PIN out of the URI (it would be logged)",
            hint=f"the PIN comes from {AUTHENTICODE_PASSWORD_ENV} or --authenticode-password-file",
        )
    tsa_cert, tsa_key = given["authenticode_tsa_cert"], given["authenticode_tsa_key"]
    if (tsa_cert is None) != (tsa_key is None):
        raise UsageError("--authenticode-tsa-cert and --authenticode-tsa-key: give both or neither")
    password_file: Path | None = given["authenticode_password_file"]
    if password_file is not None:
        password = read_passphrase_file(password_file, "--authenticode-password-file")
        source = f"from --authenticode-password-file {password_file}"
    else:
        password, source = authenticode_password(), f"from {AUTHENTICODE_PASSWORD_ENV}"
        if password is None:
            source = f"nowhere ({AUTHENTICODE_PASSWORD_ENV} is not set)"

    def absolute(path: Path | None) -> Path | None:
        return path.absolute() if path is not None else None

    return authenticode.AuthenticodeKey(
        pfx=absolute(pfx),
        module=absolute(module),
        key_uri=uri,
        certificate=absolute(cert),
        password=password,
        password_source=source,
        timestamp_url=given["authenticode_timestamp_url"],
        tsa_certificate=absolute(tsa_cert),
        tsa_key=absolute(tsa_key),
    )


def code_signer_for(args: argparse.Namespace) -> authenticode.AuthenticodeSigner | None:
    """The checked Authenticode key (None without one); SigningKeyError (exit 15) before
    anything is built when it cannot sign."""
    key = authenticode_key(args)
    if key is None:
        return None
    signer = authenticode.open_signer(key)
    get_logger().info(
        "Authenticode key checked: the Windows files will be signed",
        subject=signer.subject,
        certificate_sha256=signer.fingerprint,
        timestamp=signer.timestamp(),
    )
    return signer


def signing_arguments(args: argparse.Namespace) -> list[str]:
    """The signing options as a matrix passes them on to each build (paths made absolute; the
    passphrase stays in the environment or the file, never on a command line)."""
    passed: list[str] = []
    options = ("signing_key", "signing_key_id", "signing_passphrase_file", "attestation_key")
    for option in (*options, *AUTHENTICODE_OPTIONS):
        value = getattr(args, option, None)
        if value is not None:
            shown = str(value.absolute()) if isinstance(value, Path) else str(value)
            passed += ["--" + option.replace("_", "-"), shown]
    return passed


@contextmanager
def optional_public_key(path: Path | None) -> Iterator[PublicKey | None]:
    if path is None:
        yield None
        return
    with public_key(path) as key:
        yield key
