"""Stands in for `qga-builder run RECIPE --output DIR --log-format json [--engine URL]` in the
matrix's unit tests: prints stage events as JSON lines, then behaves as the recipe's name says
(ok, fail, slow, lose-engine-on-<url>). It writes a manifest when it succeeds."""

import json
import signal
import sys
import time
from pathlib import Path

args = sys.argv[1:]
recipe = Path(args[1])
output = Path(args[args.index("--output") + 1])
engine = args[args.index("--engine") + 1] if "--engine" in args else "default"
peers = [args[i + 1] for i, arg in enumerate(args) if arg == "--peer-engine"]
name = recipe.stem
trace = output.parent / "trace.jsonl"


def emit(event: str, **fields: object) -> None:
    sys.stderr.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stderr.flush()


def on_term(signum: int, frame: object) -> None:
    with trace.open("a") as f:
        f.write(json.dumps({"recipe": name, "engine": engine, "what": "terminated"}) + "\n")
    emit("interrupted by SIGTERM", level="error")
    sys.exit(130)


signal.signal(signal.SIGTERM, on_term)
with trace.open("a") as f:
    f.write(
        json.dumps(
            {"recipe": name, "engine": engine, "peers": peers, "what": "start", "t": time.time()}
        )
        + "\n"
    )
emit("[1/2] compile", step="compile")
time.sleep(2 if "slow" in name else 0.2)
if "fail" in name:
    emit("step compile failed: ninja exited with 1", level="error")
    sys.exit(7)
if f"lose-engine-on-{engine.rsplit('/', 1)[-1]}" in name:
    emit(f"lost the Docker daemon at {engine}: gone", level="error")
    sys.exit(5)
output.mkdir(parents=True)
manifest = {"artifacts": [{"name": "a"}, {"name": "b"}], "cache": {"hit": False}}
(output / "manifest.json").write_text(json.dumps(manifest))
emit("[2/2] publish", step="publish")
with trace.open("a") as f:
    f.write(json.dumps({"recipe": name, "engine": engine, "what": "end", "t": time.time()}) + "\n")
