"""SIGINT/SIGTERM at several stages of real runs, and SIGKILL followed by `clean`: afterwards no
container (by label), no staging or output directory, no temporary file; the next run succeeds."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest
import yaml

from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.engine import LABEL_KIND, Engine
from builder.host.cache import Cache
from builder.pipeline import stage_names
from tests.helpers import ROOT, leftover_containers, run_cli, start_cli, write_variant


def run_until(recipe: Path, out: Path, stage: str, delay: float, sig: int) -> tuple[int, str]:
    """Start a run, wait until it announces `stage`, wait `delay` s, send `sig`; wait for exit.
    Every cache off (a warm compiler cache and configured tree make configure and compile take
    a second or two, and the signal would land in a later stage); and the run must not have
    started the next stage, or the test no longer interrupts the one it names."""
    plan, _ = load_plan(recipe, Overrides())
    stages = stage_names(plan)
    number = f"[{stages.index(stage) + 1}/{len(stages)}] {stage}"
    following = f"[{stages.index(stage) + 2}/{len(stages)}] "
    process = start_cli(
        "run", str(recipe), "--no-cache", "--no-ccache", "--output", str(out),
        "--log-format", "json",
    )  # fmt: skip
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        try:
            event = json.loads(line).get("event")
        except json.JSONDecodeError:
            continue
        if event == number:
            time.sleep(delay)
            process.send_signal(sig)
            break
    else:
        process.wait()
        pytest.fail(f"the run ended before {stage}: {''.join(seen)[-3000:]}")
    rest = process.stderr.read()
    assert following not in rest, f"the signal landed after {stage} had ended: {rest[-3000:]}"
    return process.wait(timeout=300), "".join(seen) + rest


def temporary_files() -> set[str]:
    found = {str(p) for p in Cache.default().dir("tmp").iterdir()}
    found |= {str(p) for p in Path("/tmp").glob("qga-builder-rootfs-*")}
    return found


def assert_nothing_left(engine: Engine, out: Path, before: set[str]) -> None:
    assert leftover_containers(engine) == []
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name != f".{out.name}.lock"] == []
    assert temporary_files() <= before


CASES = [
    # stage, delay after it starts, signal
    ("build-image", 4.0, signal.SIGINT),
    ("unpack", 0.0, signal.SIGTERM),
    ("configure", 2.0, signal.SIGINT),
    ("compile", 8.0, signal.SIGTERM),
    ("collect", 0.0, signal.SIGINT),
    ("patch", 0.0, signal.SIGHUP),  # the terminal closed
]


@pytest.mark.parametrize("stage,delay,sig", CASES, ids=[c[0] for c in CASES])
def test_interrupt(
    tmp_path: Path, engine: Engine, patched_build: Path, stage: str, delay: float, sig: int
) -> None:
    recipe = write_variant(tmp_path, f"interrupt-{stage}")
    nonce = uuid.uuid4().hex
    if stage == "build-image":
        # A Dockerfile step no cache has seen, which runs for a minute: the signal lands in it.
        dockerfile = tmp_path / "Dockerfile.slow"
        dockerfile.write_text(
            (ROOT / "Dockerfile.linux").read_text() + f"RUN echo {nonce} && sleep 60\n"
        )
        data = yaml.safe_load(recipe.read_text())
        data["environment"]["dockerfile"] = str(dockerfile)
        recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "out" / "result"
    before = temporary_files()
    code, log = run_until(recipe, out, stage, delay, sig)
    assert code == 128 + sig, log[-3000:]
    assert "interrupted by" in log and "Traceback" not in log
    assert_nothing_left(engine, out, before)
    if stage == "build-image":
        started = next(json.loads(line) for line in log.splitlines() if '"run started"' in line)
        build_log = next(Path(started["logs"]).glob("*-build-image.log")).read_text()
        assert f"RUN echo {nonce}" in build_log  # it was interrupted inside the slow step ...
        end = time.monotonic() + 30  # ... and the daemon cancels that build: no container left
        while any(nonce in c.command for c in engine.containers()):
            assert time.monotonic() < end, "the interrupted image build kept running"
            time.sleep(0.5)
        assert not any(
            "dockerfile.slow" in tag for image in engine.images(LABEL_KIND) for tag in image.tags
        )


def test_the_next_run_succeeds(tmp_path: Path, engine: Engine, patched_build: Path) -> None:
    recipe = write_variant(tmp_path, "after-interrupts", vm_test=False)  # the build is the point
    out = tmp_path / "out"
    run_until_done = run_cli("run", str(recipe), "--no-cache", "--output", str(out))  # it builds
    assert run_until_done.returncode == 0, run_until_done.stderr[-3000:]
    assert (out / "qemu-ga-patched-static").is_file()
    assert leftover_containers(engine) == []


def test_clean_after_sigkill(tmp_path: Path, engine: Engine, patched_build: Path) -> None:
    recipe = write_variant(tmp_path, "killed")
    out_root = tmp_path / "out"
    code, _ = run_until(recipe, out_root / "killed", "compile", 3.0, signal.SIGKILL)
    assert code == -signal.SIGKILL
    # A killed run cannot clean up: its container and staging directory are left behind ...
    assert len(leftover_containers(engine)) == 1
    assert any(p.name.startswith(".killed.tmp-") for p in out_root.iterdir())
    # The session's build images stay: `clean` keeps the newest 2 per Dockerfile and base, and
    # this engine may hold more (variants, series), so it could prune the one later tests reuse.
    # Pruning is test_clean's; here it is held to a repository no build uses.
    scope = ["--output-root", str(out_root), "--repository", "qga-builder/none-here"]
    dry = run_cli("clean", *scope, "--dry-run", "--log-format", "json")
    assert dry.returncode == 0 and len(leftover_containers(engine)) == 1
    # ... until `clean` removes them.
    result = run_cli("clean", *scope, "--log-format", "json")
    assert result.returncode == 0, result.stderr
    assert leftover_containers(engine) == []
    assert not any(p.name.startswith(".killed.tmp-") for p in out_root.iterdir())
    summary = next(json.loads(line) for line in result.stderr.splitlines() if "clean done" in line)
    assert summary["containers"] == 1 and summary["staging"] == 1
