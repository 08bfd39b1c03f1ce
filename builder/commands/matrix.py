"""`qga-builder run R1 R2 ... --jobs N --output-root DIR [--engine URL ...]`: a build matrix.

Each recipe is built by its own `qga-builder run` process (one recipe, one engine, its own
output directory published atomically, its own containers removed on every exit path), so a
failure or an interrupt in one cannot corrupt another. This process only schedules: it checks
every recipe and engine first, starts up to N builds, spreads them over the engines, follows
their JSON logs for the live display, retries once on another engine a build whose engine was
lost, and ends with a summary table. Ctrl-C or SIGTERM stops every build (each removes its own
containers) before this process exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder.commands.matrix_display import Display, summary_table
from builder.commands.signing import signing_arguments
from builder.config.settings import child_environment
from builder.errors import DockerUnavailableError, Interrupted, UsageError

ENGINE_LOST = DockerUnavailableError.exit_code
POLL_SECONDS = 0.2


@dataclass
class Job:
    recipe: Path
    name: str
    output: Path
    engine: str | None = None
    state: str = "waiting"  # waiting, running, ok, failed, cancelled
    stage: str = ""
    started: float = 0.0
    ended: float = 0.0
    code: int | None = None
    error: str = ""
    attempts: list[str] = field(default_factory=list)  # engines tried, in order
    process: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    lost_engine: bool = False

    @property
    def seconds(self) -> float:
        if not self.started:
            return 0.0
        return (self.ended or time.monotonic()) - self.started


def plan_jobs(recipes: list[tuple[Path, str]], output_root: Path) -> list[Job]:
    """One job per recipe, into OUTPUT_ROOT/<recipe name>/; two recipes of one name would
    write one directory, so they are refused before anything runs."""
    seen: dict[str, Path] = {}
    for path, name in recipes:
        if name in seen:
            raise UsageError(
                f"{path}: recipe name {name!r} is also the name of {seen[name]}; "
                f"both would be written to {output_root / name}",
                hint="give each recipe of a matrix its own `name`",
            )
        seen[name] = path
    return [Job(path, name, output_root / name) for path, name in recipes]


class Matrix:
    def __init__(
        self,
        jobs: list[Job],
        engines: list[str | None],
        parallel: int,
        child_args: list[str],
        log_dir: Path,
        fail_fast: bool,
        command: tuple[str, ...] = (sys.executable, "-m", "builder"),
        child_env: Mapping[str, str] | None = None,
    ) -> None:
        self.jobs = jobs
        # This process's environment plus what only the builds get (the signing passphrase).
        self.child_env = child_environment(child_env)
        self.engines = engines
        self.parallel = max(1, parallel)
        self.child_args = child_args
        self.log_dir = log_dir
        self.fail_fast = fail_fast
        self.command = command  # what builds one recipe (the unit tests give a stand-in)
        self.lost: set[str | None] = set()
        self.lock = threading.Lock()
        self.display = Display(jobs)

    def run(self) -> int:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                self._reap()
                if self.fail_fast and any(job.state == "failed" for job in self.jobs):
                    self._cancel_all("cancelled (--fail-fast)")
                self._start_waiting()
                self.display.refresh()
                if all(job.state in ("ok", "failed", "cancelled") for job in self.jobs):
                    break
                time.sleep(POLL_SECONDS)
        except Interrupted:
            self._cancel_all("interrupted")
            self.display.refresh(final=True)
            raise
        self.display.refresh(final=True)
        summary_table(self.jobs)
        failed = [job for job in self.jobs if job.state != "ok"]
        return next((job.code for job in failed if job.code), 1) if failed else 0

    # --- scheduling --------------------------------------------------------------------------

    def _running(self) -> list[Job]:
        return [job for job in self.jobs if job.state == "running"]

    def _start_waiting(self) -> None:
        for job in self.jobs:
            if len(self._running()) >= self.parallel:
                return
            if job.state != "waiting":
                continue
            live = [e for e in self.engines if e not in self.lost and e not in job.attempts]
            if not live:
                job.state, job.code = "failed", ENGINE_LOST
                job.error = job.error or "no Docker engine left to build on"
                continue
            self._start(job, self._least_busy(live))

    def _least_busy(self, live: list[str | None]) -> str | None:
        """The live engine with the fewest builds running (the job has not lost it yet)."""
        load = {engine: 0 for engine in live}
        for running in self._running():
            if running.engine in load:
                load[running.engine] += 1
        return min(live, key=lambda engine: load[engine])

    def _start(self, job: Job, engine: str | None) -> None:
        job.engine, job.state, job.stage = engine, "running", "starting"
        job.attempts.append(engine)  # type: ignore[arg-type]
        job.started, job.ended, job.code, job.error = time.monotonic(), 0.0, None, ""
        job.log_path = self.log_dir / f"{job.name}-{len(job.attempts)}.log"
        argv = [*self.command, "run", str(job.recipe), "--output"]
        argv += [str(job.output), "--log-format", "json", *self.child_args]
        if engine is not None:
            argv += ["--engine", engine]
        for peer in self.engines:  # images they hold are copied rather than made again
            if peer != engine and peer not in self.lost:
                argv += ["--peer-engine", peer or "default"]
        job.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=self.child_env,
        )
        threading.Thread(target=self._follow, args=(job, job.process), daemon=True).start()
        self.display.event(f"{job.name}: started on {engine or 'the default engine'}")

    def _follow(self, job: Job, process: subprocess.Popen[str]) -> None:
        """Read a build's JSON log: its stage for the display, its error for the summary."""
        assert process.stderr is not None and job.log_path is not None
        with job.log_path.open("w", encoding="utf-8") as keep:
            for line in process.stderr:
                keep.write(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                text = str(event.get("event", ""))
                with self.lock:
                    if text.startswith("[") and "] " in text and event.get("step"):
                        job.stage = text.split("] ", 1)[1]
                    if event.get("level") == "error":
                        job.error = text.splitlines()[0][:300] if text else job.error
                        job.lost_engine |= text.startswith(
                            ("lost the Docker daemon", "cannot reach")
                        )

    def _reap(self) -> None:
        for job in self._running():
            assert job.process is not None
            code = job.process.poll()
            if code is None:
                continue
            job.ended, job.code = time.monotonic(), code
            if code == 0:
                job.state = "ok"
                continue
            if code == ENGINE_LOST and job.lost_engine and len(job.attempts) < 2:
                self.lost.add(job.engine)
                self.display.event(
                    f"{job.name}: engine {job.engine or 'default'} lost ({job.error}); "
                    "retrying once on another engine"
                )
                job.state, job.lost_engine = "waiting", False
                continue
            job.state = "failed"

    def _cancel_all(self, why: str) -> None:
        for job in self.jobs:
            if job.state == "waiting":
                job.state, job.error = "cancelled", why
        running = self._running()
        for job in running:
            assert job.process is not None
            job.process.send_signal(signal.SIGTERM)  # each build removes its own containers
        for job in running:
            assert job.process is not None
            try:
                job.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()
            job.ended, job.code = time.monotonic(), job.process.returncode
            job.state, job.error = "cancelled", job.error or why


def child_arguments(args: argparse.Namespace) -> list[str]:
    """The options of this `run` that each build takes as they are."""
    passed: list[str] = []
    for flag in ("locked", "no_cache", "no_ccache", "allow_outside_project", "verbose"):
        if getattr(args, flag, False):
            passed.append("--" + flag.replace("_", "-"))
    for option in ("qemu_ref", "source", "base_image"):
        value = getattr(args, option, None)
        if value is not None:
            passed += ["--" + option.replace("_", "-"), str(value)]
    return passed + signing_arguments(args)


def default_parallel(engines: list[str | None]) -> int:
    return max(1, len(engines))


def matrix_log_dir(cache_runs: Path, run_id: str) -> Path:
    return cache_runs / f"matrix-{run_id}"
