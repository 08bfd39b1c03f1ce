"""OpenPGP signatures made and checked with this host's gpg.

Signing (`run`/`release` with `--signing-key FILE` or `--signing-key-id ID`): the key is checked
before anything is built (a v4 key with a usable signing (sub)key, then a trial signature with
the passphrase), and later signs SHA256SUMS into an armored detached SHA256SUMS.asc. A key FILE
is imported into a private GnuPG home (a temporary directory of mode 0700, its agent stopped and
the directory removed afterwards, also on failure and interrupt), never the user's; a key ID is
used from the user's own home (GNUPGHOME, else ~/.gnupg) and agent.

The passphrase goes to gpg through a pipe (`--passphrase-fd`), never on a command line, in a
file or in the environment of gpg; it is never logged, and gpg's own messages (stderr) are not
repeated: what went wrong is read from `--status-fd` and said in a sentence of ours.

Checking (`verify --public-key FILE`, `release --input-public-key FILE`): FILE is imported into
a private home of its own, and the signature must be good (GOODSIG and VALIDSIG, by a key that
has neither expired nor been revoked) and made by FILE's primary key or one of its subkeys.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from builder.config.settings import child_environment
from builder.errors import HostToolError, InputError, SignatureError, SigningKeyError
from builder.formats import openpgp
from builder.formats.openpgp import KeyFormatError, ListedKey
from builder.host.files import write_new_file

MAX_KEY_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 64 << 10
MAX_PASSPHRASE_BYTES = 4096
TIMEOUT = 60.0
AGENT_TIMEOUT = 300.0  # the user's agent may ask for the passphrase in a pinentry
TRIAL_DATA = b"qga-builder: a trial signature, made before anything is built\n"
V6_HINT = (
    "make a version 4 key to sign releases with, e.g. `gpg --quick-gen-key 'Name <mail>' "
    "ed25519 sign 2y`"
)


@dataclass(frozen=True)
class SigningRequest:
    """What the command line asked to sign with. The passphrase is never shown (repr)."""

    key_file: Path | None = None
    key_id: str | None = None
    passphrase: bytes | None = field(default=None, repr=False)
    passphrase_source: str = ""  # for messages: where the passphrase came from

    @property
    def label(self) -> str:
        if self.key_file is not None:
            return f"signing key {self.key_file}"
        return f"signing key {self.key_id} (GnuPG's home: GNUPGHOME, else ~/.gnupg)"


@dataclass(frozen=True)
class GpgResult:
    returncode: int  # -1: timed out
    stdout: bytes
    records: list[list[str]]

    @property
    def words(self) -> set[str]:
        return openpgp.keywords(self.records)


def need_gpg() -> str:
    found = shutil.which("gpg")
    if found is None:
        raise HostToolError(
            "OpenPGP signatures need gpg on this host", hint="apt-get install gpg gpg-agent"
        )
    return found


def run_gpg(
    home: Path | None,
    arguments: Sequence[str],
    *,
    passphrase: bytes | None = None,
    loopback: bool = False,
    stdin: bytes | None = None,
    timeout: float = TIMEOUT,
) -> GpgResult:
    """gpg in batch mode, its status lines on stdout (data goes to files). The passphrase, if
    any, is written into a pipe whose reading end gpg inherits."""
    argv = [need_gpg(), "--batch", "--no-tty", "--no-auto-check-trustdb", "--status-fd", "1"]
    if home is not None:
        argv += ["--homedir", str(home)]
    if loopback:
        argv += ["--pinentry-mode", "loopback"]
    pass_fds: tuple[int, ...] = ()
    if passphrase is not None:
        reader, writer = os.pipe()
        try:
            os.write(writer, passphrase + b"\n")  # short: fits the pipe, never blocks
        finally:
            os.close(writer)
        pass_fds = (reader,)
        argv += ["--passphrase-fd", str(reader)]
    try:
        process = subprocess.run(
            [*argv, *arguments],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            pass_fds=pass_fds,
            check=False,
            # Taken out of the environment when read; left out here as well, whatever the caller.
            env=child_environment(),
        )
    except subprocess.TimeoutExpired:
        return GpgResult(-1, b"", [])
    finally:
        for fd in pass_fds:
            os.close(fd)
    text = process.stdout.decode("utf-8", "replace")
    return GpgResult(process.returncode, process.stdout, openpgp.status_records(text))


class PrivateHome:
    """A GnuPG home of the tool's own: a new directory of mode 0700 under the temporary
    directory; close() stops its agent and removes it."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="qga-gnupg-"))  # mode 0700
        self.scratch = self.path / "scratch"
        self.scratch.mkdir(mode=0o700)
        (self.path / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")

    def close(self) -> None:
        if not self.path.exists():
            return
        gpgconf = shutil.which("gpgconf")
        if gpgconf is not None:
            for action in (["--kill", "all"], ["--remove-socketdir"]):
                with suppress(OSError, subprocess.TimeoutExpired):
                    subprocess.run(
                        [gpgconf, "--homedir", str(self.path), *action],
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        timeout=20,
                        check=False,
                    )
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> PrivateHome:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_key_file(path: Path, what: str, error: type[InputError | SigningKeyError]) -> bytes:
    """A key file's bytes: a regular file (a link to one is fine: the user named it), bounded."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise error(f"{what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise error(f"{what} {path} is not a regular file")
        data = handle.read(MAX_KEY_BYTES + 1)
    if len(data) > MAX_KEY_BYTES:
        raise error(f"{what} {path} is larger than {MAX_KEY_BYTES} bytes: not one key")
    return data


def check_versions(data: bytes, label: str, error: type[InputError | SigningKeyError]) -> None:
    """Refuse a key file whose primary keys are not all version 4 (before gpg reads it)."""
    try:
        versions = openpgp.primary_key_versions(data)
    except (KeyFormatError, IndexError) as exc:
        raise error(f"{label}: not an OpenPGP key file ({exc or 'cut off'})") from None
    if not versions:
        raise error(f"{label}: holds no OpenPGP key")
    for kind, version in versions:
        if version != openpgp.SUPPORTED_VERSION:
            raise error(
                f"{label}: a version {version} {kind}; only version 4 keys are taken (the gpg "
                "most systems ship cannot check what a v6 key signs)",
                hint=V6_HINT,
            )


def import_key(
    home: Path, data: bytes, label: str, error: type[InputError | SigningKeyError]
) -> None:
    result = run_gpg(home, ["--import"], stdin=data)
    imported = any(record[0] == "IMPORT_OK" for record in result.records)
    if result.returncode == -1 or not imported:
        raise error(f"{label}: gpg could not import it (not an OpenPGP key, or a damaged one)")


def list_keys(home: Path | None, secret: bool, pattern: str | None = None) -> list[ListedKey]:
    listing = "--list-secret-keys" if secret else "--list-keys"
    arguments = ["--with-colons", "--fixed-list-mode", listing]
    if pattern is not None:
        arguments += ["--", pattern]
    result = run_gpg(home, arguments)
    if result.returncode != 0:
        return []
    return openpgp.parse_colons(result.stdout.decode("utf-8", "replace"))


class Signer:
    """One checked signing key: signs files into armored detached signatures."""

    def __init__(self, key: ListedKey, request: SigningRequest, home: Path | None, scratch: Path):
        self.fingerprint = key.fingerprint
        self._request = request
        self._home = home  # None: the user's own GnuPG home
        self._scratch = scratch
        # The tool's own home never asks a pinentry; the user's agent may, without a passphrase.
        self._loopback = home is not None or request.passphrase is not None
        self._timeout = TIMEOUT if self._loopback else AGENT_TIMEOUT

    def record(self) -> dict[str, str]:
        """What the manifest and release.json say of the signature: the public fingerprint."""
        return {"openpgp_fingerprint": self.fingerprint}

    def trial(self) -> None:
        """A detached signature of a few bytes, checked: the key and passphrase work."""
        self.sign_bytes(TRIAL_DATA)

    def sign_file(self, data: Path, signature: Path) -> None:
        """Write `signature` (new: a planted file or link is refused) over `data`'s bytes."""
        write_new_file(signature, self.sign_bytes(data.read_bytes()))

    def sign_bytes(self, data: bytes) -> bytes:
        source, target = self._scratch / "data", self._scratch / "data.asc"
        source.write_bytes(data)
        target.unlink(missing_ok=True)
        arguments = ["--local-user", self.fingerprint, "--armor", "--detach-sign"]
        result = run_gpg(
            self._home,
            [*arguments, "--output", str(target), str(source)],
            passphrase=self._request.passphrase,
            loopback=self._loopback,
            timeout=self._timeout,
        )
        if result.returncode != 0 or "SIG_CREATED" not in result.words or not target.is_file():
            raise SigningKeyError(f"{self._request.label}: {self._why(result)}")
        signature = target.read_bytes()
        try:  # what is published must verify: checked as its users will check it
            check_signature(self._home, self._scratch, signature, data, self.fingerprint, "it")
        except SignatureError as exc:
            raise SigningKeyError(
                f"{self._request.label}: the signature gpg made does not verify ({exc.message})"
            ) from None
        return signature

    def _why(self, result: GpgResult) -> str:
        key = f"key {self.fingerprint}"
        codes = set(openpgp.failure_codes(result.records))
        if result.returncode == -1:
            return f"gpg did not finish signing with {key} in {self._timeout:g} s"
        if openpgp.BAD_PASSPHRASE in codes:
            return f"the passphrase ({self._request.passphrase_source}) is wrong for {key}"
        no_passphrase = openpgp.NO_PASSPHRASE in codes or "NEED_PASSPHRASE" in result.words
        if no_passphrase and not self._request.passphrase:
            return (
                f"{key} is protected by a passphrase and none was given (set "
                "QGA_SIGNING_PASSPHRASE, or pass --signing-passphrase-file FILE)"
            )
        if codes & {openpgp.NO_PINENTRY, openpgp.CANCELED}:
            return f"gpg's agent could not ask for the passphrase of {key} (no pinentry)"
        for record in result.records:
            if record[0] == "INV_SGNR" and len(record) > 1:
                reason = {"4": "has been revoked", "5": "has expired"}.get(record[1])
                return f"{key} {reason or 'cannot sign (gpg: unusable secret key)'}"
        said = ", ".join(openpgp.ERROR_WORDS.get(code, f"error {code}") for code in sorted(codes))
        return f"gpg could not sign with {key}" + (f" ({said})" if said else "")


def _one_secret_key(keys: list[ListedKey], request: SigningRequest) -> ListedKey:
    if not keys:
        where = (
            "the file holds no secret key (a public key?)"
            if request.key_file
            else "no secret key matches it"
        )
        raise SigningKeyError(
            f"{request.label}: {where}",
            hint="export the secret key with `gpg --armor --export-secret-keys ID > FILE`"
            if request.key_file
            else "`gpg --list-secret-keys` lists the keys there; give a fingerprint",
        )
    if len(keys) > 1:
        listed = ", ".join(key.fingerprint for key in keys[:4])
        raise SigningKeyError(
            f"{request.label}: names {len(keys)} secret keys ({listed}); sign with one",
            hint="give the key's full fingerprint, or export only that key",
        )
    return keys[0]


@contextmanager
def open_signer(request: SigningRequest) -> Iterator[Signer]:
    """The checked signer (SigningKeyError, exit 15, when the key cannot sign); its private
    home, if any, is removed when the block ends, whatever ends it."""
    need_gpg()
    if request.passphrase is not None and len(request.passphrase) > MAX_PASSPHRASE_BYTES:
        raise SigningKeyError(f"{request.label}: the passphrase is longer than 4096 bytes")
    if request.passphrase is not None and b"\n" in request.passphrase:
        raise SigningKeyError(f"{request.label}: the passphrase holds a line break")
    with ExitStack() as stack:
        private = stack.enter_context(PrivateHome())
        home: Path | None = None
        if request.key_file is not None:
            data = read_key_file(request.key_file, "signing key", SigningKeyError)
            check_versions(data, request.label, SigningKeyError)
            import_key(private.path, data, request.label, SigningKeyError)
            home = private.path
            keys = list_keys(home, secret=True)
        else:
            assert request.key_id is not None
            keys = list_keys(None, secret=True, pattern=request.key_id)
        key = _one_secret_key(keys, request)
        problem = openpgp.signing_problem(key)
        if problem is not None:
            raise SigningKeyError(
                f"{request.label}: key {key.fingerprint}: {problem}",
                hint=V6_HINT if "version" in problem else None,
            )
        signer = Signer(key, request, home, private.scratch)
        signer.trial()
        yield signer


def check_signature(
    home: Path | None,
    scratch: Path,
    signature: bytes,
    data: bytes,
    fingerprint: str,
    what: str,
) -> None:
    """`signature` must be a good detached signature of `data` by the key `fingerprint`
    (its primary key's), in `home`'s keyring; SignatureError saying what is wrong otherwise."""
    signed, detached = scratch / "signed", scratch / "signed.asc"
    signed.write_bytes(data)
    detached.write_bytes(signature)
    result = run_gpg(home, ["--verify", str(detached), str(signed)])
    refused = result.words & {"BADSIG", "ERRSIG", "EXPKEYSIG", "REVKEYSIG"}
    primary = openpgp.validsig_primary(result.records)
    good = {"GOODSIG", "VALIDSIG"} <= result.words and primary == fingerprint
    if result.returncode == 0 and good and not refused:
        return
    raise SignatureError(f"{what} {_verdict(result, fingerprint)}")


def _verdict(result: GpgResult, fingerprint: str) -> str:
    words = result.words
    if result.returncode == -1:
        return "could not be checked: gpg did not finish"
    if "BADSIG" in words:
        return "is a bad signature: the signed file was changed after it was signed"
    if "REVKEYSIG" in words:
        return f"was made by key {fingerprint}, which has been revoked"
    if "EXPKEYSIG" in words:
        return f"was made by key {fingerprint}, which has expired"
    for record in result.records:
        if record[0] == "ERRSIG" and len(record) > 1:
            return f"was made by another key ({record[1]}), not by {fingerprint}"
    primary = openpgp.validsig_primary(result.records)
    if primary is not None and primary != fingerprint:
        return f"was made by another key ({primary}), not by {fingerprint}"
    return "is not an OpenPGP signature gpg can read"


@dataclass(frozen=True)
class PublicKey:
    """The one key signatures must be made by, alone in a private home of its own."""

    home: PrivateHome
    fingerprint: str
    source: Path

    def verify(self, signature: bytes, data: bytes, what: str) -> None:
        """SignatureError (exit 17) naming `what` unless `signature` is a good detached
        signature of `data` by this key."""
        check_signature(self.home.path, self.home.scratch, signature, data, self.fingerprint, what)


@contextmanager
def public_key(path: Path) -> Iterator[PublicKey]:
    """The key in `path` (armored or binary; exactly one v4 primary key with its subkeys,
    InputError otherwise) in a private home, removed when the block ends."""
    need_gpg()
    label = f"public key {path}"
    data = read_key_file(path, "public key", InputError)
    check_versions(data, label, InputError)
    with PrivateHome() as home:
        import_key(home.path, data, label, InputError)
        keys = list_keys(home.path, secret=False)
        if len(keys) != 1:
            raise InputError(
                f"{label}: holds {len(keys)} keys; give the one key the files must be signed by",
                hint="export it alone: gpg --armor --export FINGERPRINT > KEY.pub",
            )
        if not openpgp.V4_FINGERPRINT.match(keys[0].fingerprint):
            raise InputError(f"{label}: not a version 4 key", hint=V6_HINT)
        yield PublicKey(home, keys[0].fingerprint, path)
