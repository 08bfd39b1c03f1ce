"""A matrix over two real engines: this machine's and a second dockerd (tests/second_engine.py)
reached over TLS; and a build whose engine is killed mid-build, retried on the other.

These compile QEMU: run them under `flock /tmp/qga-qemu-build.lock`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from builder.engine import LABEL_RECIPE, LABEL_TOOL, Engine
from tests.helpers import leftover_containers, load_explicit, run_cli, start_cli, write_variant
from tests.second_engine import SecondEngine

# The agent only, without packages: packaging would make the packager box on the second engine
# too (minutes), which these tests are not about.
AGENT_ONLY = load_explicit()["artifacts"][:1]


def ours(engine: Engine, names: set[str]) -> list[str]:
    """Containers of these recipes left on the engine (others may be building beside us)."""
    return [c.name for c in engine.containers(LABEL_TOOL) if c.labels.get(LABEL_RECIPE) in names]


def _daemon(output: Path) -> dict:
    return json.loads((output / "manifest.json").read_text())["host"]["docker_daemon"]


def test_a_matrix_over_two_engines(
    tmp_path: Path, engine: Engine, second_engine: SecondEngine
) -> None:
    recipes = [
        write_variant(
            tmp_path / "recipes", name, explicit=True, vm_test=False, artifacts=AGENT_ONLY
        )
        for name in ("engines-a", "engines-b")
    ]
    root = tmp_path / "out"
    result = run_cli(
        "run", *map(str, recipes), "--output-root", str(root), "--no-cache",
        "--engine", engine.target.given, "--engine", second_engine.tcp_url,
        env=second_engine.tls_environment(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    daemons = [_daemon(root / recipe.stem) for recipe in recipes]
    with Engine(second_engine.unix_url) as second:
        assert {d["id"] for d in daemons} == {engine.describe()["id"], second.describe()["id"]}
        assert leftover_containers(second) == []
    assert {d["kind"] for d in daemons} == {"unix", "tcp-tls"}
    assert ours(engine, {"engines-a", "engines-b"}) == []


def test_a_build_whose_engine_dies_is_retried_on_the_other(tmp_path: Path, engine: Engine) -> None:
    recipe = write_variant(
        tmp_path / "recipes", "engines-lost", explicit=True, vm_test=False, artifacts=AGENT_ONLY
    )
    root = tmp_path / "out"
    with SecondEngine() as doomed, Engine(doomed.unix_url) as second:
        log_path = tmp_path / "matrix.log"
        with log_path.open("w") as log:
            # The doomed engine first: with no build running, the first engine named is taken.
            process = start_cli(
                "run", str(recipe), "--output-root", str(root), "--no-cache",
                "--engine", doomed.unix_url, "--engine", engine.target.given, log=log,
            )  # fmt: skip
            deadline = time.monotonic() + 600
            while not second.containers(LABEL_TOOL) and time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()[-3000:]
                time.sleep(1)
            time.sleep(3)  # a step is running in the build container
            doomed.kill()
            code = process.wait(timeout=1800)
        text = log_path.read_text()
        assert code == 0, text[-4000:]
        assert "retrying once on another engine" in text, text[-4000:]
    assert _daemon(root / "engines-lost")["id"] == engine.describe()["id"]
    assert ours(engine, {"engines-lost"}) == []
