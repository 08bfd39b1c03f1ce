"""Integration fixtures: real Docker engine, real QEMU source, real builds through the real CLI.

The builds are session-scoped: the patched default recipe once, and the same recipe without the
patch once (the image is reused, so the second costs only the compile).

While the first tests run, `prepare` (the tool's own command, in the background) fetches and
makes what later tests build on: images and guests that are mostly downloads and single-threaded
work, done beside the first compile instead of after it. A test that needs one of them before it
is ready waits on the same lock a second run would.

Once the first builds are done, the session's other long work runs beside the tests, one piece
at a time in the order the tests need it (`beside`): the newcomer's path (downloads, single-
threaded work, a one-vCPU guest), the Windows build, the series build, the arm64 build, the
systemd guest's vm-test. The tests that follow meanwhile are mostly waits, light runs and
guests. A test that needs a piece waits for it; one that was not started (a narrower session)
is done when asked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from builder.engine import Engine
from tests.authenticode_keys import AuthenticodeKeys, make_keys, token_signing
from tests.helpers import (
    ARM64_RECIPE,
    BACKGROUND_OWNERS,
    CI_SERIES,
    DEFAULT_RECIPE,
    OLD_SERIES,
    RECIPES,
    WINDOWS_RECIPE,
    beside_the_tests,
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
    "arm64_build": ARM64_RECIPE,  # its build image: the cross toolchain, arm64 libraries
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
    needed = _fixtures_needed(items)
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


def _fixtures_needed(items: list[pytest.Item]) -> set[str]:
    return set().union(*(getattr(item, "fixturenames", ()) for item in items))


def wait_for_prepared() -> None:
    """`prepare` and the work beside the tests, done (a failure of the latter is its test's)."""
    while _ahead:
        process, log_path = _ahead.pop()
        code = process.wait(timeout=3600)
        assert code == 0, f"prepare failed ({code}): {log_path.read_text()[-4000:]}"
    wait_for_futures(list(_beside.values()), timeout=3600)


T = TypeVar("T")
_beside_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beside")
_beside: dict[str, Future[Any]] = {}


def start_beside(name: str, work: Callable[[], Any]) -> None:
    """Queue `work` to run beside the tests (after what was queued before it)."""
    if name in _beside:
        return

    def job() -> Any:
        beside_the_tests()  # its runs' containers are not the tests' leftovers
        return work()

    _beside[name] = _beside_pool.submit(job)


def beside_result(name: str, work: Callable[[], T]) -> T:
    """What `work`, queued under `name`, gave (waiting for it); done now if never queued."""
    future = _beside.get(name)
    if future is None:
        return work()
    return future.result(timeout=3600)


def _start_beside(request: pytest.FixtureRequest, builds_dir: Path) -> None:
    """After the first builds: the session's later long work, in the order its tests come."""
    items = request.session.items
    needed = _fixtures_needed(items)
    if any(item.name == "test_the_newcomer_path_as_a_docker_group_user" for item in items):
        from tests.newcomer import play

        engine = request.getfixturevalue("engine")
        start_beside("newcomer", lambda: play(engine))
    if "windows_build" in needed:
        keys = request.getfixturevalue("authenticode_keys")
        start_beside("windows", lambda: _signed_windows_build(builds_dir, keys))
    if "series_builds" in needed and any(
        getattr(item, "callspec", None) and item.callspec.params.get("series") == CI_SERIES
        for item in items
    ):
        start_beside(f"series-{CI_SERIES}", lambda: build_series(builds_dir, CI_SERIES))
    if "arm64_build" in needed:
        start_beside("arm64", lambda: build_arm64(builds_dir))
    if any(item.name == "test_the_deb_runs_where_users_install_it" for item in items):
        from tests.integration.test_guest_vm import systemd_guest_run

        patched, work = builds_dir / "patched", builds_dir / "systemd-guest"
        work.mkdir()
        start_beside("systemd-guest", lambda: systemd_guest_run(patched, work))


def pytest_runtest_setup(item: pytest.Item) -> None:
    # `disruptive` tests restart the engine `prepare` works on; `alone` ones touch what a build
    # of `prepare` or beside the tests would share.
    if any(item.get_closest_marker(name) for name in ("disruptive", "alone")):
        wait_for_prepared()


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
def linux_builds(request: pytest.FixtureRequest, builds_dir: Path) -> dict[str, Path]:
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
    _start_beside(request, builds_dir)
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
            self.built[series] = beside_result(
                f"series-{series}", lambda: build_series(self.builds_dir, series)
            )
        return self.built[series]


def build_series(builds_dir: Path, series: str) -> Path:
    out = builds_dir / f"series-{series}"
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
    return out


def build_arm64(builds_dir: Path) -> Path:
    """recipes/linux-static-arm64.yaml as a user runs it: the default build, for arm64."""
    out = builds_dir / "arm64"
    result = run_cli(
        "run", str(ARM64_RECIPE), "--no-cache", "--output", str(out), "--log-format", "json"
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="session")
def arm64_build(builds_dir: Path, linux_builds: dict[str, Path]) -> Path:
    """The arm64 agent and its packages, built once per session (beside the tests)."""
    return beside_result("arm64", lambda: build_arm64(builds_dir))


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


def build_windows(
    recipe: str,
    out: Path,
    builds_dir: Path,
    options: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """A Windows recipe built with no wine on the PATH: wine runs only in its own container."""
    result = run_cli(
        "run",
        str(RECIPES / recipe),
        "--no-cache",
        "--output",
        str(out),
        "--log-format",
        "json",
        *(options or []),
        env={"PATH": path_without_wine(builds_dir / "bin-without-wine"), **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="session")
def authenticode_keys(tmp_path_factory: pytest.TempPathFactory) -> AuthenticodeKeys:
    """A throwaway CA, code-signing key (also in a softhsm2 token) and time-stamping authority."""
    return make_keys(tmp_path_factory.mktemp("authenticode"))


@pytest.fixture(scope="session")
def windows_build(
    builds_dir: Path, patched_build: Path, authenticode_keys: AuthenticodeKeys
) -> Path:
    """recipes/windows-msi.yaml, built once per session (beside the tests, after the Linux
    builds) and Authenticode-signed as it is built, with the key in a softhsm2 token: `make
    test`'s one Windows build is its signed one (what a publisher ships; the tests that read it
    hold for either), the MSI made again from the signed files and installed under wine by its
    check. The run stores it in the artifact cache, where test_signing publishes it from.
    Unsigned Windows builds are the full tier's (other series, `verify`)."""
    return beside_result("windows", lambda: _signed_windows_build(builds_dir, authenticode_keys))


def _signed_windows_build(builds_dir: Path, keys: AuthenticodeKeys) -> Path:
    options, env = token_signing(keys)
    return build_windows("windows-msi.yaml", builds_dir / "windows", builds_dir, options, env)


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
