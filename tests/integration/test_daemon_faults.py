"""The Docker daemon goes away in the middle of a compile (SIGKILL, as in a crash): the run ends
with one clear message and exit 5; once the daemon is back (restarted the way scripts/setup.sh
starts it), nothing of the run is left: `clean` finds no container, and there is no output.

Marked `disruptive`, so it runs after every other test: it restarts the engine they use.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.engine import Engine
from tests.helpers import ROOT, leftover_containers, start_cli, write_variant

pytestmark = pytest.mark.disruptive


def dockerd_pids() -> list[int]:
    """The default engine's daemon (its pidfile), not a second engine another test started."""
    try:
        pid = int(Path("/var/run/docker.pid").read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return []
    return [pid] if comm == "dockerd" else []


def test_daemon_lost_mid_run(tmp_path: Path, patched_build: Path) -> None:
    if not dockerd_pids():
        pytest.skip("the engine is not a local dockerd this test may kill and restart")
    recipe = write_variant(tmp_path, "daemon-lost")
    out = tmp_path / "out" / "result"
    # Every cache off: with a warm compiler cache the compile ends within the 3 s below.
    process = start_cli(
        "run", str(recipe), "--no-cache", "--no-ccache", "--output", str(out),
        "--log-format", "json",
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if '] compile"' in line:
            break
    time.sleep(3)
    for pid in dockerd_pids():
        subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(pid)], check=True)
    rest = process.stderr.read()
    code = process.wait(timeout=120)
    try:
        assert code == 5, rest[-3000:]
        messages = [json.loads(line)["event"] for line in rest.splitlines() if line.startswith("{")]
        assert any(m.startswith("lost the Docker daemon at ") for m in messages), messages
        assert "Traceback" not in rest
        assert not out.exists()
        assert [p.name for p in out.parent.iterdir()] == [".result.lock"]
    finally:
        subprocess.run(
            [str(ROOT / "scripts" / "setup.sh")],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=300,
        )
    engine = Engine()  # the daemon is back
    assert leftover_containers(engine) == []
    dry = subprocess.run(
        [
            sys.executable,
            "-m",
            "builder",
            "clean",
            "--dry-run",
            "--output-root",
            str(tmp_path),
            "--log-format",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    summary = next(json.loads(line) for line in dry.stderr.splitlines() if "clean done" in line)
    assert summary["containers"] == 0 and summary["staging"] == 0
