"""Matrices for real on this machine's engine: two recipes built at once (a table at the end,
each output complete), one of them failing, and the same interrupted mid-build (no container
left, no output). Matrices over two engines: tests/integration/test_engine_matrix.py."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from builder.outputs.output_dir import why_not_ours
from tests.helpers import leftover_containers, run_cli, start_cli, write_variant


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def test_two_recipes_at_once(tmp_path: Path, engine, patched_build: Path) -> None:
    a = write_variant(tmp_path, "matrix-a", vm_test=False)
    b = write_variant(tmp_path, "matrix-b", vm_test=False)
    root = tmp_path / "out"
    # --no-cache: both must build (an earlier session's entries would serve them otherwise)
    result = run_cli(
        "run", str(a), str(b), "--no-cache", "--jobs", "2", "--output-root", str(root)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("matrix-a", "matrix-b"):
        assert why_not_ours(root / name) is None  # complete, and the tool's own
        assert (root / name / "qemu-ga-patched-static").read_bytes() == (
            patched_build / "qemu-ga-patched-static"
        ).read_bytes()
    header, _, *rows = result.stdout.splitlines()
    assert header.split() == ["recipe", "result", "time", "engine", "artifacts", "cache"]
    assert [row.split()[:2] for row in rows] == [["matrix-a", "ok"], ["matrix-b", "ok"]]
    assert "matrix matrix-a: running (compile)" in result.stderr  # progress, without a terminal
    assert leftover_containers(engine) == []


def test_a_failure_is_in_the_exit_code_and_the_table(tmp_path: Path, engine) -> None:
    good = write_variant(tmp_path, "matrix-good", vm_test=False)
    bad = write_variant(tmp_path, "matrix-bad", vm_test=False, build={"targets": ["no-such"]})
    root = tmp_path / "out"
    result = run_cli("run", str(good), str(bad), "--jobs", "2", "--output-root", str(root))
    assert result.returncode == 7, result.stderr[-3000:]
    assert "matrix-bad: step compile failed" in result.stdout
    assert (root / "matrix-good" / "manifest.json").is_file() and not (root / "matrix-bad").exists()
    assert "Traceback" not in result.stderr
    assert leftover_containers(engine) == []


def test_interrupting_a_matrix_leaves_nothing(tmp_path: Path, engine, patched_build) -> None:
    recipes = [write_variant(tmp_path, f"matrix-int-{n}", vm_test=False) for n in (1, 2)]
    root = tmp_path / "out"
    process = start_cli(
        "run", *map(str, recipes), "--no-cache", "--no-ccache", "--jobs", "2",
        "--output-root", str(root), "--log-format", "json",
    )  # fmt: skip
    assert process.stderr is not None
    compiling: set[str] = set()
    for line in process.stderr:
        if '"matrix matrix-int-' in line and "running (compile)" in line:
            compiling.add(json.loads(line)["recipe"])
            if len(compiling) == 2:
                break
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=180) == 130, rest[-3000:]
    assert "interrupted by SIGINT" in rest and "Traceback" not in rest
    assert leftover_containers(engine) == []
    assert not any((root / r.stem).exists() for r in recipes)
