"""Logging through structlog: a human console (default) or JSON lines (`--log-format json`).

Logs go to stderr; stdout is kept for command results (plans, schemas, reports). `Progress.step`
times one stage, numbers it "k/n", binds the stage name to every event inside, and tees the
stage's command output into its own log file.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

import structlog

from builder.formats import redact

LogFormat = Literal["console", "json"]
LineSink = Callable[[str], None]
TAIL_LINES = 30

_format: LogFormat = "console"


def configure(log_format: LogFormat = "console", verbose: bool = False) -> None:
    global _format
    _format = log_format
    level = logging.DEBUG if verbose else logging.INFO
    renderer: structlog.typing.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), pad_event_to=40)
        timestamper = structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _redact_event,
            structlog.processors.add_log_level,
            timestamper,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),
        cache_logger_on_first_use=False,
    )


def _redact_event(logger: object, method: str, event: dict[str, object]) -> dict[str, object]:
    """Every string of every event, secrets masked, for the console and for JSON alike."""
    return {key: redact.deep(value) for key, value in event.items()}


class _Stderr:
    """Whatever sys.stderr is when a line is written (tests and the CLI may swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def current_format() -> LogFormat:
    return _format


def get_logger(**bind: object) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("qga-builder").bind(**bind)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def neutralize(text: str) -> str:
    """Show control characters (escape sequences among them) as visible \\xNN: output from a
    container must not move the cursor, retitle or reprogram the user's terminal."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def neutralize_lines(text: str) -> str:
    """neutralize() and secrets masked, keeping line breaks (multi-line messages)."""
    return "\n".join(neutralize(redact.text(line)) for line in text.split("\n"))


class StepOutput:
    """Receives a step's output lines: writes them to the step's log file and to the console."""

    def __init__(self, name: str, log_file: IO[str] | None, log_path: Path | None) -> None:
        self.name = name
        self._file = log_file
        self.log_path = log_path
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._log = get_logger()

    def tail_text(self, *, skip_blank: bool = False) -> str:
        """The last lines this step printed, indented, for an error message."""
        return "\n".join(f"    {line}" for line in self.tail if line.strip() or not skip_blank)

    def line(self, text: str) -> None:
        text = redact.text(text.rstrip("\n"))
        shown = neutralize(text)
        self.tail.append(shown)
        if self._file is not None:
            self._file.write(text + "\n")
            self._file.flush()
        if _format == "json":
            self._log.debug("output", line=text)  # JSON escapes control characters itself
        else:
            sys.stderr.write(f"    {self.name} | {shown}\n")
            sys.stderr.flush()


class Progress:
    """Numbers and times the stages of one run; each stage may write its own log file."""

    def __init__(self, total: int, log_dir: Path | None = None) -> None:
        self.total = total
        self.index = 0
        self.log_dir = log_dir
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self.log_files: dict[str, Path] = {}

    @contextmanager
    def step(self, name: str, *, log_output: bool = True) -> Iterator[StepOutput]:
        self.index += 1
        number = f"{self.index}/{self.total}"
        log = get_logger(step=name, n=number)
        log_path: Path | None = None
        handle: IO[str] | None = None
        if log_output and self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{self.index:02d}-{name}.log"
            handle = log_path.open("w", encoding="utf-8", errors="replace")
            self.log_files[name] = log_path
        log.info(f"[{number}] {name}")
        start = time.monotonic()
        output = StepOutput(name, handle, log_path)
        with structlog.contextvars.bound_contextvars(step=name):
            try:
                yield output
            except BaseException:
                elapsed = time.monotonic() - start
                log.error(f"[{number}] {name} failed", seconds=round(elapsed, 1))
                raise
            finally:
                if handle is not None:
                    handle.close()
        elapsed = time.monotonic() - start
        self.timings[name] = round(elapsed, 2)
        log.info(
            f"[{number}] {name} done",
            seconds=round(elapsed, 1),
            total=round(time.monotonic() - self.started, 1),
        )

    def skip(self, name: str, why: str) -> None:
        """Count a stage that does not run this time (e.g. its result came from the cache)."""
        self.index += 1
        get_logger(step=name).debug(f"[{self.index}/{self.total}] {name} skipped", why=why)

    def profile(self, top: int = 4) -> str:
        """One line for the end of a run: the slowest stages, their share, and the time no
        stage owns (start-up, clean-up), so a slow run says where its time went."""
        total = time.monotonic() - self.started
        ranked = sorted(self.timings.items(), key=lambda item: item[1], reverse=True)[:top]
        parts = [f"{name} {seconds:.1f} s ({seconds / total:.0%})" for name, seconds in ranked]
        rest = total - sum(self.timings.values())
        parts.append(f"outside stages {max(rest, 0.0):.1f} s")
        return f"{total:.1f} s: " + ", ".join(parts)
