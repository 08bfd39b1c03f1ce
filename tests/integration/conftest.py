"""Integration fixtures: real Docker engine, real QEMU source, real builds through the real CLI.

The builds are session-scoped: the patched default recipe once, and the same recipe without the
patch once (the image is reused, so the second costs only the compile).

While the first tests run, `prepare` (the tool's own command, in the background) fetches and
makes what later tests build on: images and guests that are mostly downloads and single-threaded
work, done beside the first compile instead of after it. A test that needs one of them before it
is ready waits on the same lock a second run would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.engine import Engine
from tests.helpers import (
    BACKGROUND_OWNERS,
    CI_SERIES,
    DEFAULT_RECIPE,
    OLD_SERIES,
    RECIPES,
    WINDOWS_RECIPE,
    localize,
    run_cli,
    start_cli,
    write_variant,
)
from tests.second_engine import SecondEngine

# Recipes `prepare` makes ready ahead, by the fixture through which the session's tests need them.
AHEAD = {
    "linux_builds": DEFAULT_RECIPE,  # built at once; ahead: the packager image and the guests
    "windows_build": WINDOWS_RECIPE,
    "series_builds": RECIPES / f"linux-static-qemu-{CI_SERIES}.yaml",
}
_ahead: list[tuple[subprocess.Popen[str], Path]] = []


@pytest.fixture(scope="session", autouse=True)
def prepared_ahead(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """`prepare` for the recipes the session's tests build, in the background;
    waited for (and its exit code checked) before the engine-restarting tests and at the end.
    QGA_TEST_PREPARE=0 leaves everything to the tests that need it."""
    items = request.session.items
    needed = set().union(*(getattr(item, "fixturenames", ()) for item in items))
    recipes = [str(recipe) for fixture, recipe in AHEAD.items() if fixture in needed]
    # The sysvinit guest only for the full tier, whose test boots it.
    every_guest = ["--vm-test-guests"] if any(i.get_closest_marker("full") for i in items) else []
    if recipes and os.environ.get("QGA_TEST_PREPARE", "1") != "0":
        log_path = tmp_path_factory.mktemp("ahead") / "prepare.log"
        with log_path.open("w") as log:
            process = start_cli("prepare", *every_guest, "--log-format", "json", *recipes, log=log)
        BACKGROUND_OWNERS.add(f"{socket.gethostname()}:{process.pid}")
        _ahead.append((process, log_path))
    yield
    wait_for_prepared()


def wait_for_prepared() -> None:
    while _ahead:
        process, log_path = _ahead.pop()
        code = process.wait(timeout=3600)
        assert code == 0, f"prepare failed ({code}): {log_path.read_text()[-4000:]}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("disruptive") is not None:
        wait_for_prepared()  # they restart the engine `prepare` works on


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine()  # raises a clear error (and so fails the test) when no daemon answers


@pytest.fixture(scope="session")
def second_engine() -> Iterator[SecondEngine]:
    """A second dockerd on this machine (own data root, socket, bridge, TLS listener on
    127.0.0.1 with certificates made by the test), removed at the end of the session."""
    with SecondEngine() as second:
        yield second


@pytest.fixture(scope="session")
def builds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("builds")


@pytest.fixture(scope="session")
def linux_builds(builds_dir: Path) -> dict[str, Path]:
    """The default recipe and its unpatched twin, built at the same time by two processes.

    Two recipes in parallel must both succeed (they share one image: the first to need it builds
    it, the other waits for it and reuses it).
    """
    recipes = {
        "patched": DEFAULT_RECIPE,
        # The unpatched agent fails the VM contract by design: test_vm shows that separately.
        "unpatched": write_variant(
            builds_dir, "linux-static-unpatched", explicit=True, patches=[], vm_test=False
        ),
    }
    processes = {}
    for name, recipe in recipes.items():
        log = (builds_dir / f"{name}.log").open("w")
        process = start_cli(
            "run",
            str(recipe),
            "--no-cache",  # the suite's builds are built; test_artifact_cache reruns them
            "--output",
            str(builds_dir / name),
            "--log-format",
            "json",
            log=log,
        )
        processes[name] = (process, log)
    for name, (process, log) in processes.items():
        code = process.wait(timeout=3600)
        log.close()
        assert code == 0, (builds_dir / f"{name}.log").read_text()[-4000:]
    return {name: builds_dir / name for name in recipes}


@pytest.fixture(scope="session")
def patched_build(linux_builds: dict[str, Path]) -> Path:
    return linux_builds["patched"]


@pytest.fixture(scope="session")
def unpatched_build(linux_builds: dict[str, Path]) -> Path:
    return linux_builds["unpatched"]


def series_source(series: str) -> Path:
    """The pinned Debian source of a series (as its recipe pins it), fetched once."""
    from builder.commands.common import load_plan
    from builder.config.overrides import Overrides
    from builder.host.cache import Cache
    from builder.stages.source import prepare_source

    plan, _ = load_plan(RECIPES / f"linux-static-qemu-{series}.yaml", Overrides())
    return prepare_source(plan.source, Cache.default(), lambda line: None).archive


class SeriesBuilds:
    """The default recipe with `--source` set to another series' pinned tarball: the tool picks
    that series' patch set and environment by the source's VERSION. Each series is built the
    first time a test asks for it (one at a time), then shared by the session."""

    def __init__(self, builds_dir: Path) -> None:
        self.builds_dir = builds_dir
        self.built: dict[str, Path] = {}

    def __getitem__(self, series: str) -> Path:
        if series not in self.built:
            out = self.builds_dir / f"series-{series}"
            result = run_cli(
                "run",
                str(DEFAULT_RECIPE),
                "--no-cache",
                "--source",
                str(series_source(series)),
                "--output",
                str(out),
                "--log-format",
                "json",
            )
            assert result.returncode == 0, result.stderr[-4000:]
            self.built[series] = out
        return self.built[series]


@pytest.fixture(scope="session")
def series_builds(builds_dir: Path, linux_builds: dict[str, Path]) -> SeriesBuilds:
    return SeriesBuilds(builds_dir)


def series_params() -> list[Any]:
    """OLD_SERIES as test parameters: `make test` builds one series of the old code path (the
    oldest, 5.2: its own suite, packages and configure flags); the others are in the `full`
    tier (`make test-all`)."""
    return [
        pytest.param(series, marks=() if series == CI_SERIES else pytest.mark.full)
        for series in OLD_SERIES
    ]


@pytest.fixture(scope="session")
def unpatched_old_build(builds_dir: Path, series_builds: SeriesBuilds) -> Path:
    """QEMU 7.2 as upstream ships it (its series recipe with no patches)."""
    data = localize(
        yaml.safe_load((RECIPES / "linux-static-qemu-7.2.yaml").read_text()), builds_dir
    )
    data.update(name="linux-static-qemu-7.2-unpatched", patches=[], vm_test=False)
    recipe = builds_dir / "unpatched-7.2.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    out = builds_dir / "unpatched-7.2"
    result = run_cli("run", str(recipe), "--no-cache", "--output", str(out), "--log-format", "json")
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def build_windows(recipe: str, out: Path, builds_dir: Path) -> Path:
    """A Windows recipe built with no wine on the PATH: wine runs only in its own container."""
    result = run_cli(
        "run",
        str(RECIPES / recipe),
        "--no-cache",
        "--output",
        str(out),
        "--log-format",
        "json",
        env={"PATH": path_without_wine(builds_dir / "bin-without-wine")},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="session")
def windows_build(builds_dir: Path, patched_build: Path) -> Path:
    """recipes/windows-msi.yaml, built once per session (after the Linux builds: one at a time)."""
    return build_windows("windows-msi.yaml", builds_dir / "windows", builds_dir)


@pytest.fixture(scope="session")
def windows_102_build(builds_dir: Path, windows_build: Path) -> Path:
    """recipes/windows-msi-qemu-10.2.yaml: QEMU 10.2's Windows agent and MSI."""
    return build_windows("windows-msi-qemu-10.2.yaml", builds_dir / "windows-10.2", builds_dir)


@pytest.fixture(scope="session")
def windows_111_build(builds_dir: Path, windows_build: Path) -> Path:
    """recipes/windows-msi-qemu-11.1.yaml: QEMU 11.1's Windows agent and MSI."""
    return build_windows("windows-msi-qemu-11.1.yaml", builds_dir / "windows-11.1", builds_dir)


def path_without_wine(directory: Path) -> str:
    """A PATH of links to every program of this host's PATH except wine's."""
    directory.mkdir(parents=True, exist_ok=True)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            link = directory / name
            if not name.startswith("wine") and not os.path.lexists(link):
                link.symlink_to(Path(folder) / name)
    return str(directory)


@pytest.fixture
def short_tmp() -> Path:
    """A short directory for unix sockets (their paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="qga-", dir="/tmp") as path:
        yield Path(path)
