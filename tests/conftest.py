"""Shared fixtures, the `integration` marker for everything under tests/integration/, and the
order (`_rank`): the integration modules that neither need the work the session does beside the
tests nor keep both cores busy, then the unit tests (they overlap that work), then the modules
that read its results, then the busy ones, then the tests marked `alone` (they need no build
beside them), and last the tests marked `disruptive` (they restart the Docker engine)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


# What integration/conftest.py makes beside the tests once the first builds are done (the
# newcomer's path, the Windows build, the series build, the arm64 build): modules that read it
# come after the others, when it is likely finished.
BESIDE_FIXTURES = {
    "windows_build",
    "windows_102_build",
    "windows_111_build",
    "series_builds",
    "unpatched_old_build",
    "arm64_build",
}
BESIDE_TESTS = {"test_the_newcomer_path_as_a_docker_group_user"}
BESIDE_MODULES = {"test_windows_agent.py", "test_example_release.py"}  # by getfixturevalue
# Modules that keep both cores busy (two guests at once, builds on two engines, two VMs side by
# side), in this order: after the work beside the tests, not against it (measured:
# test_guest_vm's guests took 380 s beside a compile, 207 s alone). test_guest_vm's vm-test is
# the last piece of that work: it runs beside the modules that read the rest.
BUSY_MODULES = ["test_guest_vm.py", "test_engine_matrix.py", "test_vm.py"]


def _module_ranks(items: list[pytest.Item]) -> dict[Path, int]:
    ranks: dict[Path, int] = {}
    for item in items:
        path = Path(str(item.path))
        if INTEGRATION_DIR not in path.parents:
            rank = 1
        elif path.name in BUSY_MODULES:
            rank = 3 + BUSY_MODULES.index(path.name)
        elif (
            BESIDE_FIXTURES & set(getattr(item, "fixturenames", ()))
            or item.name in BESIDE_TESTS
            or path.name in BESIDE_MODULES
        ):
            rank = 2
        else:
            rank = 0
        ranks[path] = max(rank, ranks.get(path, 0))  # a module's tests stay together
    return ranks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)
    ranks = _module_ranks(items)
    items.sort(
        key=lambda item: (
            item.get_closest_marker("disruptive") is not None,
            item.get_closest_marker("alone") is not None,
            ranks[Path(str(item.path))],
        )
    )


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
