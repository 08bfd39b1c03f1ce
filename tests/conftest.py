"""Shared fixtures, the `integration` marker for everything under tests/integration/, and the
order: tests marked `disruptive` (they restart the Docker engine) run after all others."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


@pytest.fixture
def write_recipe(tmp_path: Path):
    """write_recipe(data or text, name) -> path of a recipe file in tmp_path."""

    def write(content: dict[str, Any] | str | bytes, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(yaml.safe_dump(content, sort_keys=False))
        return path

    return write


@dataclass(frozen=True)
class OpenPgpKeys:
    """Throwaway v4 ed25519 keys (tests/openpgp_keys.py) and their exported files."""

    keyring: Any
    passphrase: str
    signer: str  # fingerprints
    signer_secret: Path  # protected by `passphrase`
    signer_public: Path
    plain: str
    plain_secret: Path  # no passphrase
    plain_public: Path
    expired_secret: Path
    revoked: str
    revoked_secret: Path
    revoked_public: Path


@pytest.fixture(scope="session")
def openpgp_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenPgpKeys]:
    """Made once per session by the host's gpg in a home of the tests' own."""
    from tests.openpgp_keys import Keyring

    files = tmp_path_factory.mktemp("openpgp")
    keyring = Keyring(files / "home")
    passphrase = "correct horse battery staple"
    signer = keyring.make("Release Signer <signer@example.org>", passphrase)
    plain = keyring.make("Plain Signer <plain@example.org>")
    expired = keyring.make("Old Signer <old@example.org>", expire="1d", at="20200101T000000")
    revoked = keyring.make("Revoked Signer <revoked@example.org>")
    keyring.revoke(revoked)
    try:
        yield OpenPgpKeys(
            keyring=keyring,
            passphrase=passphrase,
            signer=signer,
            signer_secret=keyring.export_secret(signer, files / "signer.asc", passphrase),
            signer_public=keyring.export_public(signer, files / "signer.pub"),
            plain=plain,
            plain_secret=keyring.export_secret(plain, files / "plain.asc"),
            plain_public=keyring.export_public(plain, files / "plain.pub", armor=False),
            expired_secret=keyring.export_secret(expired, files / "expired.asc"),
            revoked=revoked,
            revoked_secret=keyring.export_secret(revoked, files / "revoked.asc"),
            revoked_public=keyring.export_public(revoked, files / "revoked.pub"),
        )
    finally:
        keyring.close()
