"""The matrix's own control flow, with a stand-in for the per-recipe build process
(tests/data/fake_build.py): how many run at once, which engine each goes to, the retry of a
build whose engine was lost, --fail-fast, the exit code and the summary. Real matrices (real
builds on two engines, interrupted) are in tests/integration/test_matrix.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from builder.commands.matrix import Matrix, plan_jobs
from builder.commands.matrix_display import result_of
from builder.errors import UsageError
from tests.helpers import ROOT

FAKE = (sys.executable, str(ROOT / "tests" / "data" / "fake_build.py"))


def _matrix(tmp_path: Path, names: list[str], engines, parallel: int, fail_fast=False):
    recipes = []
    for name in names:
        path = tmp_path / f"{name}.yaml"
        path.write_text("name: " + name)
        recipes.append((path, name))
    jobs = plan_jobs(recipes, tmp_path / "out")
    (tmp_path / "out").mkdir()
    return Matrix(jobs, engines, parallel, [], tmp_path / "logs", fail_fast, FAKE), jobs


def _trace(tmp_path: Path) -> list[dict]:
    path = tmp_path / "out" / "trace.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_all_succeed_and_the_summary_reads_each_manifest(tmp_path: Path, capsys) -> None:
    matrix, jobs = _matrix(tmp_path, ["r1", "r2", "r3"], [None], 2)
    assert matrix.run() == 0
    assert [job.state for job in jobs] == ["ok", "ok", "ok"]
    assert result_of(jobs[0])["artifacts"] == 2 and result_of(jobs[0])["cache"] == "miss"
    table = capsys.readouterr().out
    assert "recipe" in table and "r3" in table and "miss" in table


def test_no_more_than_jobs_run_at_once(tmp_path: Path) -> None:
    matrix, _ = _matrix(tmp_path, ["slow1", "slow2", "slow3"], [None], 2)
    assert matrix.run() == 0
    events = sorted(_trace(tmp_path), key=lambda e: e["t"])
    running = peak = 0
    for event in events:
        running += 1 if event["what"] == "start" else -1
        peak = max(peak, running)
    assert peak == 2


def test_builds_are_spread_over_the_engines(tmp_path: Path) -> None:
    engines = ["unix:///run/a.sock", "tcp://127.0.0.1:1"]
    matrix, jobs = _matrix(tmp_path, ["slow1", "slow2"], engines, 2)
    assert matrix.run() == 0
    assert sorted(job.engine for job in jobs) == sorted(engines)


def test_a_build_whose_engine_is_lost_is_retried_once_elsewhere(tmp_path: Path) -> None:
    engines = ["unix:///run/a.sock", "unix:///run/b.sock"]
    matrix, jobs = _matrix(tmp_path, ["lose-engine-on-a.sock"], engines, 1)
    assert matrix.run() == 0
    (job,) = jobs
    assert job.attempts == engines and job.state == "ok"
    assert result_of(job)["attempts"] == 2
    assert "unix:///run/a.sock" in matrix.lost


def test_each_build_is_told_the_other_live_engines(tmp_path: Path) -> None:
    """Images they hold are copied rather than made again; a lost one is no longer named."""
    a, b = "unix:///run/a.sock", "unix:///run/b.sock"
    matrix, _ = _matrix(tmp_path, ["lose-engine-on-a.sock"], [a, b], 1)
    assert matrix.run() == 0
    starts = [event for event in _trace(tmp_path) if event["what"] == "start"]
    assert [(event["engine"], event["peers"]) for event in starts] == [(a, [b]), (b, [])]


def test_lost_on_every_engine_fails_clearly(tmp_path: Path) -> None:
    engines = ["unix:///run/a.sock"]
    matrix, jobs = _matrix(tmp_path, ["lose-engine-on-a.sock"], engines, 1)
    assert matrix.run() == 5
    assert jobs[0].state == "failed" and "lost the Docker daemon" in jobs[0].error


def test_a_failure_sets_the_exit_code_and_the_others_finish(tmp_path: Path) -> None:
    matrix, jobs = _matrix(tmp_path, ["fail", "r2"], [None], 2)
    assert matrix.run() == 7
    assert [job.state for job in jobs] == ["failed", "ok"]
    assert jobs[0].error == "step compile failed: ninja exited with 1"
    assert not (tmp_path / "out" / "fail").exists()


def test_fail_fast_stops_the_others(tmp_path: Path) -> None:
    matrix, jobs = _matrix(tmp_path, ["fail", "slow2", "slow3"], [None], 2, fail_fast=True)
    assert matrix.run() == 7
    assert [job.state for job in jobs] == ["failed", "cancelled", "cancelled"]
    trace = _trace(tmp_path)
    assert {"recipe": "slow2", "engine": "default", "what": "terminated"} in trace
    assert not any(e["recipe"] == "slow3" for e in trace)  # never started


def test_two_recipes_of_one_name_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    with pytest.raises(UsageError, match="recipe name 'same' is also the name of"):
        plan_jobs([(a, "same"), (b, "same")], tmp_path / "out")
