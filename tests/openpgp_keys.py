"""Throwaway OpenPGP keys for the signing tests: made by the host's gpg in a GnuPG home of the
test's own (never the user's), v4 ed25519, with and without a passphrase, expired, revoked.
Passphrases go to gpg on a pipe here too."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path


class Keyring:
    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Cheap key protection: a test key's passphrase need not cost a second to check.
        (home / "gpg-agent.conf").write_text("s2k-count 65536\n")

    def gpg(self, *args: str, passphrase: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["gpg", "--homedir", str(self.home), "--batch", "--no-tty"]
        argv += ["--pinentry-mode", "loopback", "--passphrase-fd", "0"]
        return subprocess.run(
            [*argv, *args],
            input=(passphrase or "") + "\n",
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )

    def make(self, uid: str, passphrase: str = "", *, expire: str = "never", at: str = "") -> str:
        """A new v4 ed25519 signing key; its fingerprint. `at`: a faked creation time."""
        faked = ["--faked-system-time", at] if at else []
        self.gpg(*faked, "--quick-gen-key", uid, "ed25519", "sign", expire, passphrase=passphrase)
        return self.fingerprint(uid)

    def fingerprint(self, uid: str) -> str:
        listing = self.gpg("--with-colons", "--list-secret-keys", uid).stdout
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))

    def export_secret(self, fingerprint: str, path: Path, passphrase: str = "") -> Path:
        armored = self.gpg(
            "--s2k-count",
            "65536",
            "--armor",
            "--export-secret-keys",
            fingerprint,
            passphrase=passphrase,
        )
        path.write_text(armored.stdout)
        return path

    def export_public(self, fingerprint: str, path: Path, *, armor: bool = True) -> Path:
        argv = ["--armor"] if armor else []
        result = subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", *argv, "--export", fingerprint],
            capture_output=True,
            check=True,
            timeout=60,
        )
        path.write_bytes(result.stdout)
        return path

    def revoke(self, fingerprint: str) -> None:
        """Import the revocation certificate gpg stored when it made the key."""
        stored = (self.home / "openpgp-revocs.d" / f"{fingerprint}.rev").read_text()
        certificate = "\n".join(line.removeprefix(":") for line in stored.splitlines())
        path = self.home / "revoke.asc"
        path.write_text(certificate + "\n")
        self.gpg("--import", str(path))

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            capture_output=True,
            check=False,
            timeout=30,
        )


def check_as_a_user(directory: Path, public_key: Path, home: Path) -> None:
    """What the README tells a user to run, in a fresh GnuPG home holding only the key."""
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    subprocess.run([*gpg, "--import", str(public_key)], check=True, capture_output=True)
    verified = subprocess.run(
        [*gpg, "--verify", "SHA256SUMS.asc", "SHA256SUMS"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    assert verified.returncode == 0, verified.stderr
    assert "Good signature" in verified.stderr
    summed = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    assert summed.returncode == 0, summed.stdout + summed.stderr


def crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def armored(packets: bytes, kind: str = "PRIVATE KEY") -> str:
    body = base64.b64encode(packets).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    checksum = base64.b64encode(crc24(packets).to_bytes(3, "big")).decode()
    begin, end = f"-----BEGIN PGP {kind} BLOCK-----", f"-----END PGP {kind} BLOCK-----"
    return "\n".join([begin, "", *lines, f"={checksum}", end, ""])


def v6_secret_key() -> str:
    """A minimal RFC 9580 version 6 secret key packet (Ed25519), armored: enough for a reader
    to see its version (the host's gpg 2.2 can neither make nor read such keys)."""
    public = bytes([6]) + (1700000000).to_bytes(4, "big") + bytes([27])
    public += (32).to_bytes(4, "big") + bytes(range(32))
    body = public + bytes([0]) + bytes(range(32, 64))  # S2K usage 0: the secret in clear
    packet = bytes([0xC0 | 5, len(body)]) + body
    return armored(packet)
