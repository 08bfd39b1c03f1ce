"""What a matrix shows while it runs (one line per recipe: state, stage, elapsed) and the table
it ends with (recipe, result, time, engine, artifacts, cache)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from builder import log

Job = Any  # commands.matrix.Job (not imported: the matrix imports this module)


class Display:
    """On a terminal (console logs) the lines are redrawn in place; elsewhere (CI, JSON logs)
    a line is written each time a recipe changes stage or state."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs
        self.live = sys.stderr.isatty() and log.current_format() == "console"
        self.drawn = 0
        self.last: dict[str, tuple[str, str]] = {}

    def event(self, message: str) -> None:
        self._erase()
        log.get_logger().info(message)

    def refresh(self, final: bool = False) -> None:
        if self.live:
            self._erase()
            lines = [self._line(job) for job in self.jobs]
            sys.stderr.write("".join(line + "\n" for line in lines))
            sys.stderr.flush()
            self.drawn = 0 if final else len(lines)
            return
        for job in self.jobs:
            now = (job.state, job.stage)
            if self.last.get(job.name) != now:
                self.last[job.name] = now
                log.get_logger(recipe=job.name).info(
                    f"matrix {job.name}: {job.state}"
                    + (f" ({job.stage})" if job.state == "running" else ""),
                    seconds=round(job.seconds, 1),
                )

    def _erase(self) -> None:
        if self.live and self.drawn:
            sys.stderr.write(f"\x1b[{self.drawn}F\x1b[J")  # up N lines, clear to the end
            self.drawn = 0

    def _line(self, job: Job) -> str:
        width = max(len(j.name) for j in self.jobs)
        where = f" on {job.engine}" if job.engine else ""
        detail = job.stage if job.state == "running" else (job.error or "")
        text = f"  {job.name:<{width}}  {job.state:<9} {job.seconds:6.1f} s  {detail}{where}"
        return log.neutralize(text)[:200]


def result_of(job: Job) -> dict[str, Any]:
    """What the summary says of one recipe (its manifest, when it published one)."""
    row: dict[str, Any] = {
        "recipe": job.name,
        "result": job.state,
        "seconds": round(job.seconds, 1),
        "engine": job.engine or "default",
        "artifacts": 0,
        "cache": "-",
        "attempts": len(job.attempts),
        "output": str(job.output) if job.state == "ok" else "",
        "error": job.error if job.state != "ok" else "",
    }
    manifest = _manifest(job.output) if job.state == "ok" else None
    if manifest is not None:
        row["artifacts"] = len(manifest.get("artifacts", []))
        row["cache"] = "hit" if (manifest.get("cache") or {}).get("hit") else "miss"
    return row


def summary_table(jobs: list[Job]) -> None:
    rows = [result_of(job) for job in jobs]
    if log.current_format() == "json":
        for row in rows:
            log.get_logger().info("matrix result", **row)
        return
    headers = ("recipe", "result", "time", "engine", "artifacts", "cache")
    cells = [
        (r["recipe"], r["result"], f"{r['seconds']:.1f} s", r["engine"], str(r["artifacts"]),
         r["cache"])
        for r in rows
    ]  # fmt: skip
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    out = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    for row in rows:
        if row["error"]:
            out.append(f"{row['recipe']}: {row['error']}")
    sys.stdout.write("\n".join(log.neutralize(line) for line in out) + "\n")
    sys.stdout.flush()


def _manifest(directory: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
